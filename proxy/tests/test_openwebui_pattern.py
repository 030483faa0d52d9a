"""Open WebUI's traffic to Ollama through the proxy, request for request and header for header.

Open WebUI is too large to install for a test, so `OpenWebUI` below sends what its backend
sends, with the same HTTP libraries (aiohttp, and requests where Open WebUI uses requests),
the same headers and the same body encodings. Followed in open-webui/open-webui:

- backend/open_webui/routers/ollama.py (commit 598282cf): `send_get_request` (aiohttp GET,
  `Content-Type: application/json`, and with ENABLE_FORWARD_USER_INFO_HEADERS the
  `X-OpenWebUI-User-Name` (URL-quoted, spaces kept), `-Id`, `-Email`, `-Role` headers), used for
  `/api/tags` and `/api/ps` by `get_all_models` / `get_ollama_loaded_models` and, without a user,
  for `/api/version` by `get_ollama_versions`; `send_post_request` (aiohttp POST of a ready
  body, the same headers plus `X-OpenWebUI-Chat-Id` from the chat's metadata), used by
  `generate_chat_completion` for `/api/chat` (`json.dumps` of the form's
  `model_dump(exclude_none=True)`, `:latest` added to the model name), by
  `generate_completion` for `/api/generate` (`model_dump_json(exclude_none=True)`) and by
  `unload_model` (`{"model", "keep_alive": 0, "prompt": ""}`); `show_model_info` posts
  `/api/show` with requests.
- backend/open_webui/utils/payload.py (commit 227ce3f6): `apply_model_params_to_body_ollama`
  puts a model's parameters in `options` and `keep_alive` at the root;
  `convert_payload_openai_to_ollama` shapes the chat request.
- backend/open_webui/routers/tasks.py (commit 884bb3f4): `generate_title` and
  `generate_chat_tags` send one user message with `stream: false` and the chat id in the
  metadata, through the same `/api/chat` path as a chat.
- backend/open_webui/retrieval/utils.py (commit 60b8cfb9): `generate_ollama_batch_embeddings`
  posts `{"input": [...], "model": ...}` to `/api/embed` with requests, with
  `Authorization: Bearer <key>` even when the key is empty.
- backend/open_webui/routers/openai.py (commit 671f5772): an Ollama added as an OpenAI
  connection: `send_get_request` for `{url}/models` (no Content-Type) and
  `generate_chat_completion` posting `{url}/chat/completions` with `Authorization`.

Current Open WebUI makes titles and tags with `/api/chat` (tasks.py); `/api/generate` with
`stream: false` is what its `/ollama/api/generate` route relays for other callers, and it is
covered too.
"""

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import aiohttp
import httpx
import pytest
import requests

from proxy.models import Backend, Message

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
CHAT_ID = "6f1c2a3b-0d4e-4f5a-8b6c-7d8e9f0a1b2c"
SYSTEM = "You are a helpful assistant. Réponds brièvement."
QUESTION = "Why is the sky blue?"
TITLE_TASK = (
    "### Task:\nWrite a 3-5 word title with an emoji (🌌 Night Sky) for the chat below. JSON "
    '{"title": "..."}.\n\n<chat_history>\nUSER: Why is the sky blue?\n</chat_history>'
)
TAGS_TASK = (
    "### Task:\nList 1-3 broad tags for the chat below as JSON "
    '{"tags": [...]}.\n\n<chat_history>\nUSER: Why is the sky blue?\n</chat_history>'
)


@dataclass(frozen=True)
class User:
    name: str
    id: str
    email: str
    role: str


ZOE = User("Zoë Lovelace", "b7a3c0de-1f2e-4d5c-9b8a-7f6e5d4c3b2a", "zoe@example.com", "user")


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes


class OpenWebUI:
    """The requests Open WebUI's backend sends to one Ollama connection."""

    def __init__(self, url: str, user: User | None = ZOE, key: str = ""):
        self.url = url
        self.user = user  # None: ENABLE_FORWARD_USER_INFO_HEADERS is off
        self.key = key

    def user_headers(self, chat_id: str | None = None) -> dict:
        if self.user is None:
            return {}
        headers = {
            "X-OpenWebUI-User-Name": quote(self.user.name, safe=" "),
            "X-OpenWebUI-User-Id": self.user.id,
            "X-OpenWebUI-User-Email": self.user.email,
            "X-OpenWebUI-User-Role": self.user.role,
        }
        if chat_id:
            headers["X-OpenWebUI-Chat-Id"] = chat_id
        return headers

    def bearer(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def _aiohttp(self, method: str, path: str, headers: dict, data=None) -> Reply:
        async def exchange() -> Reply:
            async with (
                aiohttp.ClientSession() as session,
                session.request(method, self.url + path, data=data, headers=headers) as response,
            ):
                body = await response.read()
                return Reply(response.status, response.headers["Content-Type"], body)

        return asyncio.run(exchange())

    def _requests(self, path: str, headers: dict, **body) -> Reply:
        response = requests.post(self.url + path, headers=headers, timeout=30, **body)
        return Reply(response.status_code, response.headers["Content-Type"], response.content)

    # routers/ollama.py

    def get(self, path: str, *, as_user: bool = True) -> Reply:
        """`send_get_request`: the model lists, and the version without a user."""
        headers = {"Content-Type": "application/json", **self.bearer()}
        return self._aiohttp("GET", path, {**headers, **(self.user_headers() if as_user else {})})

    def post(self, path: str, payload: str | bytes, chat_id: str | None = None) -> Reply:
        """`send_post_request`: chats, titles, tags, completions, unloads."""
        headers = {"Content-Type": "application/json", **self.bearer()}
        return self._aiohttp("POST", path, {**headers, **self.user_headers(chat_id)}, payload)

    def show(self, model: str) -> Reply:
        """`show_model_info`, with requests."""
        headers = {"Content-Type": "application/json", **self.bearer(), **self.user_headers()}
        return self._requests("/api/show", headers, data=json.dumps({"model": model}).encode())

    # retrieval/utils.py

    def embed(self, texts: list[str], model: str) -> Reply:
        """`generate_ollama_batch_embeddings`: the bearer header is sent even without a key."""
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.key}",
            **self.user_headers(),
        }
        return self._requests("/api/embed", headers, json={"input": texts, "model": model})

    # routers/openai.py, with the Ollama as an OpenAI connection at {url}/v1

    def openai_models(self) -> Reply:
        return self._aiohttp("GET", "/v1/models", {**self.bearer(), **self.user_headers()})

    def openai_chat(self, payload: dict, chat_id: str) -> Reply:
        headers = {
            "Content-Type": "application/json",
            **self.user_headers(chat_id),
            "Authorization": f"Bearer {self.key}",
        }
        return self._aiohttp("POST", "/v1/chat/completions", headers, json.dumps(payload))


def model_dump_json(payload: dict) -> bytes:
    """What pydantic's `model_dump_json` writes: compact, non-ASCII as is."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def chat_request(history: list[dict]) -> dict:
    """A chat as `generate_chat_completion` sends it for a model with a system prompt and
    parameters (temperature, context size, keep-alive) set in Open WebUI."""
    return {
        "model": "llama3.2:latest",
        "messages": [{"role": "system", "content": SYSTEM}, *history],
        "options": {"temperature": 0.7, "num_ctx": 4096},
        "stream": True,
        "keep_alive": "5m",
    }


def task_request(prompt: str) -> dict:
    """A title or tags request from tasks.py, as it reaches `/api/chat`."""
    messages = [{"role": "user", "content": prompt}]
    return {"model": "llama3.2:latest", "messages": messages, "stream": False}


def visit(owui: OpenWebUI) -> list[tuple[str, Callable[[], Reply]]]:
    """One user's visit, call by call: the lists Open WebUI loads on start, a model picked, a
    chat turn with retrieval, its title and tags, a chat over the OpenAI connection, a
    completion and an unload."""
    question = [{"role": "user", "content": QUESTION}]

    def chat(payload: dict, chat_id: str = CHAT_ID) -> Callable[[], Reply]:
        return lambda: owui.post("/api/chat", json.dumps(payload), chat_id)

    def generate(payload: bytes | str) -> Callable[[], Reply]:
        return lambda: owui.post("/api/generate", payload)

    openai_chat = {"model": "llama3.2:latest", "messages": question, "stream": True}
    completion = {"model": "llama3.2", "prompt": TITLE_TASK, "stream": False}
    unload = {"model": "llama3.2:latest", "keep_alive": 0, "prompt": ""}
    return [
        ("GET /api/version", lambda: owui.get("/api/version", as_user=False)),
        ("GET /api/tags", lambda: owui.get("/api/tags")),
        ("GET /api/ps", lambda: owui.get("/api/ps")),
        ("POST /api/show", lambda: owui.show("llama3.2:latest")),
        ("RAG /api/embed", lambda: owui.embed([QUESTION], "all-minilm")),
        ("chat /api/chat", chat(chat_request(question))),
        ("title /api/chat", chat(task_request(TITLE_TASK))),
        ("tags /api/chat", chat(task_request(TAGS_TASK))),
        ("GET /v1/models", owui.openai_models),
        ("chat /v1/chat/completions", lambda: owui.openai_chat(openai_chat, CHAT_ID)),
        ("title /api/generate", generate(model_dump_json(completion))),
        ("unload /api/generate", generate(json.dumps(unload))),
    ]


def seen_by(simulator) -> list:
    """What reached the simulator; `Connection` is hop-by-hop, the proxy's own business."""
    seen = httpx.get(f"{simulator.url}/_sim/requests").json()
    for request in seen:
        request["headers"].pop("connection", None)
    return [(r["method"], r["path"], r["query"], r["body"], r["headers"]) for r in seen]


@pytest.fixture(scope="module")
def openwebui_settings(tmp_path_factory):
    """PROXY_USER_HEADERS and CONVERSATION_ID_HEADERS as PROXY_TRUST_OPENWEBUI_HEADERS=1 sets
    them, read from a fresh start of the project's settings."""
    data_dir = tmp_path_factory.mktemp("openwebui")
    show = "from django.conf import settings as s; import json; "
    show += "print(json.dumps([s.PROXY_USER_HEADERS, s.CONVERSATION_ID_HEADERS]))"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", show],
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "DATA_DIR": str(data_dir),
            "PROXY_TRUST_OPENWEBUI_HEADERS": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def proxy(proxy_settings, start_proxy, openwebui_settings):
    """The proxy as set up behind Open WebUI, without health checks among the requests."""
    proxy_settings.PROXY_USER_HEADERS, proxy_settings.CONVERSATION_ID_HEADERS = openwebui_settings
    proxy_settings.BACKEND_CHECK_SECONDS = 3600
    return start_proxy()


def replayed(simulator, owui: OpenWebUI) -> tuple[list, list, list]:
    """A visit: the replies, the bytes the simulator wrote for each, and the requests it saw."""
    simulator.reset()
    replies, written = [], []
    for name, call in visit(owui):
        replies.append((name, call()))
        written.append(simulator.wait_for(in_flight=0)["last_response"])
    return replies, written, seen_by(simulator)


def test_the_openwebui_settings_trust_its_user_and_chat_headers(openwebui_settings):
    users, conversations = openwebui_settings

    assert users == ["x-openwebui-user-email", "x-openwebui-user-name", "x-openwebui-user-id"]
    assert "x-openwebui-chat-id" in conversations


def test_a_visit_is_relayed_byte_for_byte_as_without_the_proxy(simulator, proxy):
    direct, _, direct_seen = replayed(simulator, OpenWebUI(simulator.url))
    proxied, written, proxied_seen = replayed(simulator, OpenWebUI(proxy.url))

    assert proxied_seen == direct_seen
    assert len(proxied_seen) == len(proxied) == 12
    for (name, reply), (_, straight), sent in zip(proxied, direct, written, strict=True):
        assert reply.body == sent, name
        assert (reply.status, reply.content_type) == (straight.status, straight.content_type), name
        assert reply.status == 200, name


def test_a_visit_records_each_model_call_for_the_openwebui_user(simulator, proxy):
    replies = dict(replayed(simulator, OpenWebUI(proxy.url))[0])

    proxy.flush()
    messages = list(Message.objects.order_by("id"))
    assert [(m.endpoint, m.stream) for m in messages] == [
        ("/api/embed", False),
        ("/api/chat", True),
        ("/api/chat", False),
        ("/api/chat", False),
        ("/v1/chat/completions", True),
        ("/api/generate", False),
        ("/api/generate", True),  # no "stream" in an unload: Ollama's default
    ]
    assert {m.user for m in messages} == {ZOE.email}
    assert {m.status for m in messages} == {"success"}
    rag, chat, title, tags, openai_chat, completion, unload = messages

    assert rag.prompt == QUESTION and rag.model == "all-minilm"
    assert rag.input_tokens == json.loads(replies["RAG /api/embed"].body)["prompt_eval_count"]

    final = json.loads(replies["chat /api/chat"].body.splitlines()[-1])
    assert chat.model == "llama3.2:latest"
    assert chat.prompt == f"[system]\n{SYSTEM}\n\n[user]\n{QUESTION}"
    assert chat.options == {"temperature": 0.7, "num_ctx": 4096}
    assert (chat.input_tokens, chat.output_tokens) == (
        final["prompt_eval_count"],
        final["eval_count"],
    )
    streamed = [json.loads(line) for line in replies["chat /api/chat"].body.splitlines()]
    assert chat.response == "".join(part["message"]["content"] for part in streamed)
    assert chat.conversation.external_id == CHAT_ID

    for task, name, prompt in [
        (title, "title /api/chat", TITLE_TASK),
        (tags, "tags /api/chat", TAGS_TASK),
    ]:
        reply = json.loads(replies[name].body)
        assert task.prompt == f"[user]\n{prompt}"
        assert task.response == reply["message"]["content"] != ""
        assert (task.input_tokens, task.output_tokens) == (
            reply["prompt_eval_count"],
            reply["eval_count"],
        )

    assert openai_chat.prompt == f"[user]\n{QUESTION}" and openai_chat.response != ""
    generated = json.loads(replies["title /api/generate"].body)
    assert (completion.prompt, completion.response) == (TITLE_TASK, generated["response"])
    assert completion.output_tokens == generated["eval_count"]
    assert (unload.prompt, unload.response, unload.done_reason) == ("", "", "unload")


def test_without_trusted_headers_the_user_is_the_client_address(simulator, proxy, settings):
    settings.PROXY_USER_HEADERS = []
    replayed(simulator, OpenWebUI(proxy.url))

    proxy.flush()
    assert set(Message.objects.values_list("user", flat=True)) == {"127.0.0.1"}


def test_without_forwarded_user_info_the_user_is_the_client_address(simulator, proxy):
    owui = OpenWebUI(proxy.url, user=None)
    replayed(simulator, owui)

    proxy.flush()
    assert set(Message.objects.values_list("user", flat=True)) == {"127.0.0.1"}


def test_open_webuis_key_for_the_connection_reaches_ollama(simulator, proxy):
    owui = OpenWebUI(proxy.url, key="sk-connection-key")
    replayed(simulator, owui)

    seen = seen_by(simulator)
    assert {headers.get("authorization") for *_, headers in seen} == {"Bearer sk-connection-key"}
    proxy.flush()
    stored = json.dumps(list(Message.objects.values()), default=str)
    assert "sk-connection-key" not in stored


def test_a_user_named_by_the_name_header_is_stored_unquoted(simulator, proxy, settings):
    settings.PROXY_USER_HEADERS = ["x-openwebui-user-name"]
    OpenWebUI(proxy.url).post(
        "/api/generate", model_dump_json({"model": "llama3.2", "prompt": "Hi"})
    )

    proxy.flush()
    assert Message.objects.get().user == ZOE.name


class HostedModels(BaseHTTPRequestHandler):
    """A hosted OpenAI-compatible API with OpenAI's untagged ids: its model list, and a chat
    completion that knows only its own id (the models it was asked for are kept in `asked`)."""

    asked: list[str] = []

    def do_GET(self):
        listed = {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}
        self._answer(200 if self.path == "/v1/models" else 404, listed)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.asked.append(request["model"])
        if self.path != "/v1/chat/completions" or request["model"] != "gpt-4o-mini":
            self._answer(404, {"error": {"message": f"model {request['model']} not found"}})
            return
        self._answer(
            200,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-mini",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Blue light scatters."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
            },
        )

    def _answer(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def beside_a_hosted_api(proxy_settings, start_proxy):
    """The proxy routing between the simulated Ollama and a hosted API's model list."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostedModels)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    Backend.objects.create(name="hosted", kind=Backend.Kind.OPENAI, url=url, api_key="sk-h")
    yield start_proxy()
    server.shutdown()
    server.server_close()


def listed_to_open_webui(proxy) -> set[str]:
    """The names `get_all_models` keeps from `/api/tags`: each entry's `model`."""
    return {
        entry["model"] for entry in json.loads(OpenWebUI(proxy.url).get("/api/tags").body)["models"]
    }


def test_open_webui_sees_the_hosted_models_in_the_merged_list(beside_a_hosted_api):
    assert {"gpt-4o-mini:latest", "llama3.2:latest"} <= listed_to_open_webui(beside_a_hosted_api)


def test_open_webui_can_pick_every_model_the_merged_list_offers(beside_a_hosted_api):
    listed = listed_to_open_webui(beside_a_hosted_api)

    picked = {name if ":" in name else f"{name}:latest" for name in listed}
    assert picked <= listed


def test_open_webui_chats_with_a_hosted_model_by_its_listed_name(beside_a_hosted_api):
    HostedModels.asked.clear()
    body = {"model": "gpt-4o-mini:latest", "messages": [{"role": "user", "content": "Why?"}]}
    reply = OpenWebUI(beside_a_hosted_api.url).post(
        "/api/chat", model_dump_json({**body, "stream": False})
    )

    assert reply.status == 200, reply.body
    answer = json.loads(reply.body)
    assert answer["model"] == "gpt-4o-mini:latest"  # the name the client asked for
    assert answer["message"]["content"] == "Blue light scatters."
    assert (answer["prompt_eval_count"], answer["eval_count"]) == (9, 3)
    assert HostedModels.asked == ["gpt-4o-mini"]  # the API got its own id back
