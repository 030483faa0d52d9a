"""Hybrid routing: two simulated Ollamas and a simulated hosted OpenAI-compatible API behind the
proxy, on loopback. Requests go by model, are balanced and fail over before the first byte
(never after); health checks take a backend out and bring it back; model lists are merged; and
every message and metric says which backend answered."""

from __future__ import annotations

import json
import logging
import socket

import httpx
import ollama
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.models import Backend, Message, ModelPrice
from proxy.simulator import RunningSimulator, simulated_text

pytestmark = pytest.mark.django_db(transaction=True)

HOSTED_KEY = "sk-hosted-routing-5f1e0c2b9a7d4e3f"
HELLO = [{"role": "user", "content": "Why is the sky blue?"}]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def name_of(sim: RunningSimulator) -> str:
    """An OLLAMA_URL backend's name: its host and port."""
    return f"127.0.0.1:{sim.port}"


def posted(sim: RunningSimulator) -> list[str]:
    """The model routes a simulator was asked (health checks are GETs)."""
    recorded = httpx.get(f"{sim.url}/_sim/requests").json()
    return [request["path"] for request in recorded if request["method"] == "POST"]


def samples(url: str, name: str) -> dict[frozenset, float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def backend_up(url: str, backend: str) -> float | None:
    return samples(url, "ollama_backend_up").get(frozenset({("backend", backend)}))


@pytest.fixture
def ollama_a():
    with RunningSimulator(tokens_per_second=0, ttft=0, models=("llama3.2", "llava")) as sim:
        yield sim


@pytest.fixture
def ollama_b():
    with RunningSimulator(tokens_per_second=0, ttft=0, models=("llama3.2", "all-minilm")) as sim:
        yield sim


@pytest.fixture
def hosted():
    """The hosted API: only /v1/*, only with its key, serving a model no Ollama has."""
    with RunningSimulator(
        tokens_per_second=0, ttft=0, models=("qwen3",), openai_only=True, api_key=HOSTED_KEY
    ) as sim:
        yield sim


@pytest.fixture
def admin(client, admin_user):
    # force_login would pick the first auth backend, the login throttle, which finds no user.
    client.force_login(admin_user, backend="django.contrib.auth.backends.ModelBackend")
    return client


@pytest.fixture
def two_ollamas(proxy_settings, ollama_a, ollama_b):
    proxy_settings.OLLAMA_URL = f"{ollama_a.url},{ollama_b.url}"
    return proxy_settings


@pytest.fixture
def hybrid(two_ollamas, start_proxy, hosted):
    Backend.objects.create(
        name="hosted", kind=Backend.Kind.OPENAI, url=f"{hosted.url}/v1", api_key=HOSTED_KEY
    )
    return start_proxy()


def test_each_request_goes_to_a_backend_that_serves_its_model(hybrid, ollama_a, ollama_b, hosted):
    client = ollama.Client(host=hybrid.url)
    client.chat(model="llava", messages=HELLO)
    client.embed(model="all-minilm", input="sky")
    sdk = openai.OpenAI(base_url=f"{hybrid.url}/v1", api_key="unused", max_retries=0)
    answer = sdk.chat.completions.create(model="qwen3", messages=HELLO, max_tokens=3)
    described = sdk.models.retrieve("qwen3")

    assert answer.choices[0].message.content == simulated_text(3)
    assert described.id == "qwen3"
    assert posted(ollama_a) == ["/api/chat"]
    assert posted(ollama_b) == ["/api/embed"]
    assert posted(hosted) == ["/v1/chat/completions"]
    assert hosted.stats()["last_request"]["path"] == "/v1/models/qwen3"
    hybrid.flush()
    assert dict(Message.objects.values_list("model", "backend")) == {
        "llava": name_of(ollama_a),
        "all-minilm": name_of(ollama_b),
        "qwen3": "hosted",
    }


def test_a_model_nobody_lists_goes_to_an_ollama_which_answers_for_it(hybrid, hosted):
    with pytest.raises(ollama.ResponseError) as raised:
        ollama.Client(host=hybrid.url).chat(model="nosuchmodel", messages=HELLO)

    assert raised.value.status_code == 404
    assert posted(hosted) == []


def test_a_model_on_two_ollamas_is_balanced_between_them(hybrid, ollama_a, ollama_b):
    client = ollama.Client(host=hybrid.url)
    for _ in range(6):
        client.generate(model="llama3.2", prompt="Hi")

    assert len(posted(ollama_a)) == len(posted(ollama_b)) == 3


def test_the_backend_with_fewer_requests_in_flight_goes_first(hybrid, ollama_a, ollama_b):
    client = ollama.Client(host=hybrid.url)
    client.generate(model="llama3.2", prompt="Hi")
    client.generate(model="llama3.2", prompt="Hi")
    body = json.dumps({"model": "llama3.2", "prompt": "Hi"}).encode()
    held = socket.create_connection(("127.0.0.1", hybrid.port))
    held.sendall(
        b"POST /api/generate HTTP/1.1\r\nHost: x\r\nX-Sim-TTFT: 30\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    try:
        ollama_a.wait_for(in_flight=1)
        for _ in range(3):
            client.generate(model="llama3.2", prompt="Hi")

        assert (len(posted(ollama_a)), len(posted(ollama_b))) == (2, 4)
    finally:
        held.close()


def test_weights_share_the_load_of_equal_priorities(
    proxy_settings, start_proxy, ollama_a, ollama_b
):
    Backend.objects.create(name="light", url=ollama_a.url, priority=1, weight=1)
    Backend.objects.create(name="heavy", url=ollama_b.url, priority=1, weight=3)
    proxy = start_proxy()

    client = ollama.Client(host=proxy.url)
    for _ in range(8):
        client.generate(model="llama3.2", prompt="Hi")

    assert (len(posted(ollama_a)), len(posted(ollama_b))) == (2, 6)


def test_a_backend_that_cannot_be_reached_is_skipped_before_the_first_byte(
    proxy_settings, start_proxy, ollama_a
):
    proxy_settings.OLLAMA_URL = ollama_a.url
    proxy_settings.BACKEND_FAILURES = 100  # keep it in routing: the request finds it away
    Backend.objects.create(
        name="away", url=f"http://127.0.0.1:{closed_port()}", model_names="llama3.2", priority=1
    )
    proxy = start_proxy()
    errors = samples(proxy.url, "ollama_upstream_errors_total").get(
        frozenset({("kind", "connect")}), 0
    )

    reply = ollama.Client(host=proxy.url).generate(model="llama3.2", prompt="Hi")

    assert reply.response
    assert posted(ollama_a) == ["/api/generate"]
    assert samples(proxy.url, "ollama_upstream_errors_total")[frozenset({("kind", "connect")})] == (
        errors + 1
    )
    proxy.flush()
    message = Message.objects.get()
    assert (message.status, message.backend) == ("success", name_of(ollama_a))


def test_a_busy_backend_is_skipped_before_the_first_byte(proxy_settings, start_proxy, ollama_a):
    with RunningSimulator(tokens_per_second=1, ttft=0, max_parallel=1, max_queue=0) as busy:
        proxy_settings.OLLAMA_URL = ollama_a.url
        Backend.objects.create(name="busy", url=busy.url, model_names="llama3.2", priority=1)
        proxy = start_proxy()
        with httpx.stream(
            "POST", f"{busy.url}/api/generate", json={"model": "llama3.2", "prompt": "Hi"}
        ) as slow:
            chunks = slow.iter_raw()
            next(chunks)  # the busy one's only slot is taken

            reply = ollama.Client(host=proxy.url).generate(model="llama3.2", prompt="Hi")

        assert reply.response
        assert busy.stats()["rejected"] == 1
    assert posted(ollama_a) == ["/api/generate"]
    proxy.flush()
    assert Message.objects.get().backend == name_of(ollama_a)


def test_a_stream_that_breaks_after_its_first_byte_is_never_retried(
    proxy_settings, start_proxy, ollama_a
):
    with RunningSimulator(tokens_per_second=0, ttft=0) as crashing:
        proxy_settings.OLLAMA_URL = ollama_a.url
        Backend.objects.create(name="crashing", url=crashing.url, model_names="*", priority=1)
        proxy = start_proxy()
        client = ollama.Client(host=proxy.url, headers={"X-Sim-Fail": "drop"})
        received = []
        server_log = Records()
        logging.getLogger("uvicorn.error").addHandler(server_log)
        try:
            with pytest.raises(httpx.RemoteProtocolError):
                for part in client.generate(model="llama3.2", prompt="Hi", stream=True):
                    received.append(part.response)
        finally:
            logging.getLogger("uvicorn.error").removeHandler(server_log)

        assert received
        assert crashing.stats()["dropped"] == 1
    assert posted(ollama_a) == []
    proxy.flush()
    message = Message.objects.get()
    assert (message.status, message.backend) == ("error", "crashing")
    assert "lost the connection to" in message.error
    # Cut by raising to uvicorn, without the traceback it would log for each.
    assert server_log.records == []


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_a_backend_that_goes_down_leaves_routing_and_comes_back(
    proxy_settings, start_proxy, ollama_a, wait_until
):
    proxy_settings.OLLAMA_URL = ollama_a.url
    proxy_settings.BACKEND_CHECK_SECONDS = 0.05
    proxy_settings.BACKEND_FAILURES = 2
    second = RunningSimulator(tokens_per_second=0, ttft=0).start()
    port = second.port
    row = Backend.objects.create(name="gpu-2", url=second.url)
    proxy = start_proxy()
    client = ollama.Client(host=proxy.url)
    try:
        assert backend_up(proxy.url, "gpu-2") == 1
        second.stop()
        wait_until(lambda: backend_up(proxy.url, "gpu-2") == 0)
        wait_until(lambda: Backend.objects.get(pk=row.pk).healthy is False)

        for _ in range(4):
            client.generate(model="llama3.2", prompt="Hi")
        assert len(posted(ollama_a)) == 4

        second = RunningSimulator(port=port, tokens_per_second=0, ttft=0).start()
        wait_until(lambda: backend_up(proxy.url, "gpu-2") == 1)
        wait_until(lambda: Backend.objects.get(pk=row.pk).healthy is True)
        for _ in range(4):
            client.generate(model="llama3.2", prompt="Hi")
        assert posted(second)
    finally:
        second.stop()
    row.refresh_from_db()
    assert row.health_error == ""
    assert "llama3.2:latest" in row.discovered_models


def test_the_model_lists_merge_what_every_healthy_backend_offers(hybrid, ollama_a, ollama_b):
    client = ollama.Client(host=hybrid.url)
    client.generate(model="llava", prompt="Hi")
    client.embed(model="all-minilm", input="sky")

    tags = {model.model for model in client.list().models}
    running = sorted(model.model for model in client.ps().models)
    sdk = openai.OpenAI(base_url=f"{hybrid.url}/v1", api_key="unused", max_retries=0)
    listed = {model.id for model in sdk.models.list()}

    assert tags == {"llama3.2:latest", "llava:latest", "all-minilm:latest", "qwen3:latest"}
    assert running == ["all-minilm:latest", "llava:latest"]
    assert listed == tags


def test_the_merged_list_leaves_out_a_backend_that_is_down(
    proxy_settings, start_proxy, ollama_a, wait_until
):
    proxy_settings.OLLAMA_URL = f"{ollama_a.url},http://127.0.0.1:{closed_port()}"
    proxy_settings.BACKEND_FAILURES = 1
    proxy = start_proxy()

    tags = ollama.Client(host=proxy.url).list()

    assert {model.model for model in tags.models} == {"llama3.2:latest", "llava:latest"}


def test_messages_and_metrics_name_the_backend_and_costs_use_its_price(hybrid, ollama_a, hosted):
    ModelPrice.objects.create(model_pattern="*", input_usd_per_million=1)
    ModelPrice.objects.create(model_pattern="qwen3*", backend="hosted", input_usd_per_million=1000)
    hosted_chat = frozenset(
        {
            ("model", "qwen3"),
            ("endpoint", "/v1/chat/completions"),
            ("status", "success"),
            ("backend", "hosted"),
        }
    )
    local_chat = frozenset(
        {
            ("model", "llava"),
            ("endpoint", "/api/chat"),
            ("status", "success"),
            ("backend", name_of(ollama_a)),
        }
    )
    before = samples(hybrid.url, "ollama_requests_total")

    ollama.Client(host=hybrid.url).chat(model="llava", messages=HELLO)
    sdk = openai.OpenAI(base_url=f"{hybrid.url}/v1", api_key="unused", max_retries=0)
    sdk.chat.completions.create(model="qwen3", messages=HELLO)

    hybrid.flush()
    local = Message.objects.get(model="llava")
    remote = Message.objects.get(model="qwen3")
    assert local.cost_usd == pytest.approx(local.input_tokens * 1 / 1e6)
    assert remote.cost_usd == pytest.approx(remote.input_tokens * 1000 / 1e6)
    after = samples(hybrid.url, "ollama_requests_total")
    assert after[hosted_chat] - before.get(hosted_chat, 0) == 1
    assert after[local_chat] - before.get(local_chat, 0) == 1


def test_a_single_ollama_is_relayed_as_before_with_its_name_on_messages(proxy, simulator):
    tags = httpx.get(f"{proxy.url}/api/tags")

    assert tags.content == httpx.get(f"{simulator.url}/api/tags").content
    ollama.Client(host=proxy.url).generate(model="llama3.2", prompt="Hi")
    proxy.flush()
    assert Message.objects.get().backend == name_of(simulator)


def expected_usage(hosted: RunningSimulator, tokens: int):
    """What the hosted API counts for HELLO, asked directly with the OpenAI SDK."""
    sdk = openai.OpenAI(base_url=f"{hosted.url}/v1", api_key=HOSTED_KEY, max_retries=0)
    return sdk.chat.completions.create(
        model="qwen3", messages=HELLO, extra_headers={"X-Sim-Tokens": str(tokens)}
    ).usage


def test_the_ollama_client_chats_with_a_model_only_the_hosted_api_serves(hybrid, hosted):
    usage = expected_usage(hosted, 5)
    client = ollama.Client(host=hybrid.url, headers={"X-Sim-Tokens": "5"})

    whole = client.chat(model="qwen3", messages=HELLO)
    parts = list(client.chat(model="qwen3", messages=HELLO, stream=True))

    streamed = "".join(part.message.content for part in parts)
    assert whole.message.content == streamed == simulated_text(5)
    for reply in (whole, parts[-1]):
        assert reply.done and reply.done_reason == "stop"
        assert (reply.prompt_eval_count, reply.eval_count) == (
            usage.prompt_tokens,
            usage.completion_tokens,
        )
        assert reply.total_duration > 0
    assert not any(part.done for part in parts[:-1])
    assert posted(hosted) == ["/v1/chat/completions"] * 3
    hybrid.flush()
    messages = Message.objects.filter(endpoint="/api/chat").order_by("timestamp")
    assert [(m.stream, m.status, m.backend) for m in messages] == [
        (False, "success", "hosted"),
        (True, "success", "hosted"),
    ]
    for message in messages:
        assert message.response == simulated_text(5)
        assert message.prompt == "[user]\nWhy is the sky blue?"
        assert (message.input_tokens, message.output_tokens) == (
            usage.prompt_tokens,
            usage.completion_tokens,
        )
        assert message.total_duration_seconds > 0
    assert messages[1].ttft_seconds is not None
    assert messages[1].tokens_per_second is not None


def test_the_ollama_client_generates_and_embeds_through_the_hosted_api(
    proxy_settings, start_proxy, ollama_a
):
    with RunningSimulator(
        tokens_per_second=0, ttft=0, models=("all-minilm", "qwen3"), api_key=HOSTED_KEY
    ) as embedder:
        proxy_settings.OLLAMA_URL = ollama_a.url
        Backend.objects.create(
            name="embedder",
            kind=Backend.Kind.OPENAI,
            url=f"{embedder.url}/v1",
            api_key=HOSTED_KEY,
            model_names="all-minilm,qwen3",
        )
        proxy = start_proxy()
        client = ollama.Client(host=proxy.url, headers={"X-Sim-Tokens": "4"})

        generated = client.generate(model="qwen3", prompt="Hi")
        embedded = client.embed(model="all-minilm", input=["a", "b"])

        assert generated.response == simulated_text(4)
        assert len(embedded.embeddings) == 2
        assert posted(embedder) == ["/v1/chat/completions", "/v1/embeddings"]
    proxy.flush()
    assert set(Message.objects.values_list("endpoint", "backend")) == {
        ("/api/generate", "embedder"),
        ("/api/embed", "embedder"),
    }


def test_a_hosted_error_reaches_an_ollama_client_in_ollama_s_shape(hybrid):
    client = ollama.Client(host=hybrid.url, headers={"X-Sim-Fail": "429"})

    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="qwen3", messages=HELLO, stream=False)

    assert raised.value.status_code == 429
    assert raised.value.error == "rate limit exceeded"
    hybrid.flush()
    message = Message.objects.get()
    assert (message.status, message.http_status, message.error) == (
        "error",
        429,
        "rate limit exceeded",
    )


def test_the_hosted_api_key_is_never_stored_logged_exported_shown_or_a_label(
    two_ollamas, start_proxy, hosted, caplog, exports
):
    caplog.set_level(logging.DEBUG)
    Backend.objects.create(
        name="hosted", kind=Backend.Kind.OPENAI, url=f"{hosted.url}/v1", api_key=HOSTED_KEY
    )
    Backend.objects.create(
        name="away-api",
        kind=Backend.Kind.OPENAI,
        url=f"http://127.0.0.1:{closed_port()}/v1",
        api_key=HOSTED_KEY,
        model_names="far-model",
    )
    proxy = start_proxy()
    native = ollama.Client(host=proxy.url)
    sdk = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="the-client-s-own", max_retries=0)
    bodies = []

    native.chat(model="qwen3", messages=HELLO)
    sdk.chat.completions.create(model="qwen3", messages=HELLO)
    assert hosted.stats()["last_request"]["headers"]["authorization"] == f"Bearer {HOSTED_KEY}"
    for model, headers in (("qwen3", {"X-Sim-Fail": "500"}), ("far-model", {})):
        for path, body in (
            ("/api/chat", {"model": model, "messages": HELLO, "stream": False}),
            ("/v1/chat/completions", {"model": model, "messages": HELLO}),
        ):
            reply = httpx.post(f"{proxy.url}{path}", json=body, headers=headers)
            assert reply.status_code >= 500
            bodies.append(reply.text)
    bodies.append(httpx.get(f"{proxy.url}/api/tags").text)
    bodies.append(httpx.get(f"{proxy.url}/v1/models").text)

    proxy.flush()
    stored = json.dumps(list(Message.objects.values()), default=str)
    assert Message.objects.filter(backend="away-api").count() == 2
    assert HOSTED_KEY not in stored
    assert "the-client-s-own" not in json.dumps(hosted.stats(), default=str)
    assert HOSTED_KEY not in "\n".join(bodies)
    assert HOSTED_KEY not in caplog.text
    assert HOSTED_KEY not in httpx.get(f"{proxy.url}/metrics").text

    for exported in exports(proxy.url).values():
        assert "qwen3" in exported
        assert HOSTED_KEY not in exported


def test_the_admin_never_shows_the_api_key_and_keeps_it_when_left_empty(admin):
    backend = Backend.objects.create(
        name="hosted",
        kind=Backend.Kind.OPENAI,
        url="https://api.example.com/v1",
        api_key=HOSTED_KEY,
    )
    change = f"/admin/proxy/backend/{backend.pk}/change/"

    listed = admin.get("/admin/proxy/backend/")
    form = admin.get(change)
    saved = admin.post(
        change,
        {
            "name": "hosted",
            "kind": "openai",
            "url": "https://api.example.com/v1",
            "api_key": "",
            "model_names": "gpt-4o*",
            "priority": 5,
            "weight": 2,
            "enabled": "on",
        },
    )

    assert listed.status_code == form.status_code == 200
    assert HOSTED_KEY not in listed.content.decode()
    assert HOSTED_KEY not in form.content.decode()
    assert saved.status_code == 302
    backend.refresh_from_db()
    assert (backend.api_key, backend.model_names, backend.priority) == (HOSTED_KEY, "gpt-4o*", 5)
    history = admin.get(f"/admin/proxy/backend/{backend.pk}/history/")
    assert HOSTED_KEY not in history.content.decode()


def test_the_admin_replaces_or_removes_the_api_key(admin):
    backend = Backend.objects.create(
        name="hosted", kind=Backend.Kind.OPENAI, url="https://api.example.com/v1", api_key="old"
    )
    change = f"/admin/proxy/backend/{backend.pk}/change/"
    fields = {
        "name": "hosted",
        "kind": "openai",
        "url": "https://api.example.com/v1",
        "priority": 100,
        "weight": 1,
        "enabled": "on",
    }

    admin.post(change, {**fields, "api_key": "new"})
    backend.refresh_from_db()
    replaced = backend.api_key
    admin.post(change, {**fields, "remove_api_key": "on"})
    backend.refresh_from_db()

    assert (replaced, backend.api_key) == ("new", "")


def test_the_admin_refuses_a_name_that_could_be_an_ollama_url_s(admin):
    response = admin.post(
        "/admin/proxy/backend/add/",
        {
            "name": "gpu:11434",
            "kind": "ollama",
            "url": "http://gpu:11434",
            "priority": 1,
            "weight": 1,
        },
    )

    assert response.status_code == 200
    assert not Backend.objects.exists()


def test_the_message_admin_filters_and_shows_by_backend(hybrid, ollama_a, admin):
    ollama.Client(host=hybrid.url).chat(model="llava", messages=HELLO)
    openai.OpenAI(base_url=f"{hybrid.url}/v1", api_key="unused", max_retries=0).embeddings.create(
        model="qwen3", input="sky"
    )
    hybrid.flush()
    remote = Message.objects.get(backend="hosted")

    listed = admin.get("/admin/proxy/message/", {"backend": "hosted"})
    shown = admin.get(f"/admin/proxy/message/{remote.pk}/change/")

    assert listed.status_code == shown.status_code == 200
    assert [m.pk for m in listed.context["cl"].result_list] == [remote.pk]
    assert name_of(ollama_a) in listed.content.decode()  # a choice of the filter
    assert "<dt>Backend</dt><dd>hosted</dd>" in shown.content.decode()
