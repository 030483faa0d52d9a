"""Ollama's vocabulary: its routes, the upstream client, and how to read its requests and replies.

This is the only module that knows Ollama's (and its OpenAI layer's) field names: `eval_count`
becomes `output_tokens` here and nowhere else. Parsing works on a copy of the bytes, after the
exchange, in the recorder's writer thread; the bytes relayed to the client are never touched.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from django.conf import settings

from . import http1

# Routes that run a model: each request on them becomes a Message. The value is the operation.
MODEL_ROUTES = {
    "/api/generate": "generate",
    "/api/chat": "chat",
    "/api/embed": "embed",
    "/api/embeddings": "embeddings",
    "/v1/chat/completions": "chat",
    "/v1/completions": "generate",
    "/v1/embeddings": "embed",
}

# Not copied in either direction (Ollama's own proxy list, RFC 9110 §7.6.1).
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def is_ollama_path(path: str) -> bool:
    """True for the paths Ollama serves: `/`, `/api/...` and `/v1/...`."""
    return path == "/" or path.startswith(("/api/", "/v1/")) or path in {"/api", "/v1"}


def is_streamed_upload(method: str, path: str) -> bool:
    """Blob uploads are raw model files of many GB: streamed through, never buffered."""
    return method == "POST" and path.startswith("/api/blobs/")


def error_body(message: str) -> bytes:
    """Ollama's error shape, as gin writes it (compact JSON, no trailing newline)."""
    return json.dumps({"error": message}, separators=(",", ":")).encode()


# --- The upstream client --------------------------------------------------------------------


def open_session() -> aiohttp.ClientSession:
    """The process's pooled client to Ollama; opened and closed by the ASGI lifespan.

    aiohttp rather than httpx: httpx 0.28's pool collapses under concurrency (DESIGN.md §1:
    ~760 req/s against ~11,400 for aiohttp at 16 connections on a 2-core box).
    """
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.PROXY_CONNECT_TIMEOUT,
        sock_read=settings.PROXY_IDLE_TIMEOUT or None,
    )
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=60)
    return aiohttp.ClientSession(
        base_url=None,
        connector=connector,
        timeout=timeout,
        # The client's bytes go through unchanged: no decompression, no headers of our own.
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def describe_upstream_error(error: BaseException, upstream: str) -> tuple[int, str, str]:
    """HTTP status, message for the client and error kind for a failure to reach an upstream
    (`upstream` says which, e.g. "Ollama at http://127.0.0.1:11434"; never a credential)."""
    if isinstance(error, aiohttp.ClientConnectorError | http1.ConnectFailed):
        return 502, f"could not connect to {upstream}: {error.os_error}", "connect"
    if isinstance(error, TimeoutError):
        idle = settings.PROXY_IDLE_TIMEOUT
        return 504, f"{upstream} sent nothing for {idle:g} s", "timeout"
    return 502, f"lost the connection to {upstream}: {error}", "connection"


def is_connect_failure(error: BaseException) -> bool:
    """The request never reached the upstream (so another one may be tried)."""
    return isinstance(error, aiohttp.ClientConnectorError | http1.ConnectFailed)


# --- Reading requests -----------------------------------------------------------------------


@dataclass
class RequestInfo:
    model: str = ""
    prompt: str = ""
    messages: list | None = None
    options: dict | None = None
    stream: bool = False
    error: str = ""


def _text_of_content(content: Any) -> str:
    """Message content as text: a string, or OpenAI's list of parts with images noted."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif part.get("type") in {"image_url", "input_image"}:
                parts.append("[image]")
            elif part.get("type") == "input_audio":
                parts.append("[audio]")
        return "\n".join(parts)
    return "" if content is None else json.dumps(content)


def _readable_messages(messages: list) -> tuple[str, list]:
    """A chat history as readable text, and as a list without image payloads."""
    blocks, kept = [], []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role", ""))
        text = _text_of_content(message.get("content"))
        images = message.get("images") or []
        entry = {"role": role, "content": text}
        if images:
            entry["images"] = len(images)
            text = f"{text}\n" + "[image]" * len(images) if text else "[image]" * len(images)
        for key in ("tool_calls", "tool_name", "tool_call_id", "name"):
            if message.get(key):
                entry[key] = message[key]
        if message.get("thinking") or message.get("reasoning"):
            entry["thinking"] = message.get("thinking") or message.get("reasoning")
        kept.append(entry)
        blocks.append(f"[{role}]\n{text}")
    return "\n\n".join(blocks), kept


def _input_text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(str(item) for item in value)
    return "" if value is None else str(value)


def parse_request(path: str, body: bytes) -> RequestInfo:
    """What was asked: model, prompt text and options, from a model route's request body."""
    try:
        data = _loads(body) if body else None
    except ValueError:
        return RequestInfo(error="request body is not JSON")
    if not isinstance(data, dict):
        return RequestInfo(error="request body is not a JSON object")

    info = RequestInfo(model=str(data.get("model") or data.get("name") or ""))
    stream = data.get("stream")
    operation = MODEL_ROUTES.get(path)
    if isinstance(stream, bool):
        info.stream = stream
    else:  # Ollama's defaults: native generate and chat stream, /v1 and embeddings do not
        info.stream = operation in {"generate", "chat"} and not path.startswith("/v1/")
    options = data.get("options")
    info.options = options if isinstance(options, dict) else None
    if path.startswith("/v1/"):
        knobs = {
            key: data[key]
            for key in ("temperature", "top_p", "max_tokens", "seed", "stop")
            if key in data
        }
        info.options = knobs or None

    if operation == "chat" and isinstance(data.get("messages"), list):
        info.prompt, info.messages = _readable_messages(data["messages"])
    elif operation == "generate":
        prompt = _input_text(data.get("prompt"))
        system = data.get("system")
        info.prompt = f"[system]\n{system}\n\n[user]\n{prompt}" if system else prompt
        if data.get("images"):
            info.prompt += "\n" + "[image]" * len(data["images"])
    elif operation in {"embed", "embeddings"}:
        info.prompt = _input_text(data.get("input", data.get("prompt")))
    return info


# A body whose first key is "model" (the `ollama` clients write it first): read without parsing
# a body that may carry megabytes of base64 images (orjson: ~55 ms for 10 MB).
_LEADING_MODEL = re.compile(rb'\s*\{\s*"model"\s*:\s*"([^"\\]*)"')


def requested_model(body: bytes) -> str:
    """The model a request body names, for choosing a backend; "" when it names none."""
    leading = _LEADING_MODEL.match(body)
    if leading is not None:
        return leading.group(1).decode("utf-8", "replace")
    data = _object(body)
    model = data.get("model") or data.get("name") or ""
    return model if isinstance(model, str) else ""


def streams(path: str, body: bytes) -> bool:
    """Whether the reply to a model route streams: the body's `stream`, else Ollama's default."""
    stream = _object(body).get("stream")
    if isinstance(stream, bool):
        return stream
    return MODEL_ROUTES.get(path) in {"generate", "chat"} and not path.startswith("/v1/")


def _object(body: bytes) -> dict:
    try:
        data = _loads(body) if body else None
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# --- Reading replies ------------------------------------------------------------------------


@dataclass
class ResponseInfo:
    """What came back, in our vocabulary."""

    text: str = ""
    thinking: str = ""
    tool_calls: list = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    done: bool = False
    done_reason: str = ""
    error: str = ""
    total_duration_seconds: float | None = None
    load_duration_seconds: float | None = None
    prompt_eval_duration_seconds: float | None = None
    eval_duration_seconds: float | None = None
    chunks: int = 0


def _seconds(value: Any) -> float | None:
    return value / 1e9 if isinstance(value, int | float) and value else None


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or json.dumps(error))
    return str(error)


def _read_native(info: ResponseInfo, obj: dict, texts: list, thoughts: list) -> None:
    """One Ollama object: a stream line or a whole non-streamed reply. Text pieces go to
    `texts` and `thoughts`, joined once at the end (`+=` on an attribute copies the whole
    text at every line)."""
    if "error" in obj:
        info.error = _error_message(obj["error"])
        return
    message = obj.get("message")
    source = message if isinstance(message, dict) else obj
    piece = source.get("content" if source is message else "response")
    if piece:
        texts.append(piece)
    piece = source.get("thinking")
    if piece:
        thoughts.append(piece)
    calls = source.get("tool_calls")
    if calls:
        info.tool_calls.extend(calls)
    if obj.get("done"):
        info.done = True
        info.done_reason = obj.get("done_reason") or ""
    for key in _NATIVE_DURATIONS:
        if key in obj:
            setattr(info, f"{key}_seconds", _seconds(obj[key]))
    if "prompt_eval_count" in obj:
        info.input_tokens = obj["prompt_eval_count"]
    if "eval_count" in obj:
        info.output_tokens = obj["eval_count"]


_NATIVE_DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


def _merge_tool_call_delta(calls: list, delta: dict) -> None:
    """OpenAI streams tool calls as fragments keyed by index; arguments arrive as string pieces."""
    index = delta.get("index", len(calls))
    while len(calls) <= index:
        calls.append({"function": {"name": "", "arguments": ""}})
    call = calls[index]
    if delta.get("id"):
        call["id"] = delta["id"]
    function = delta.get("function") or {}
    call["function"]["name"] += function.get("name") or ""
    call["function"]["arguments"] += function.get("arguments") or ""


def _read_openai(info: ResponseInfo, obj: dict, streamed: bool, texts: list, thoughts: list):
    """One OpenAI-compatible object: an SSE chunk or a whole reply."""
    if obj.get("error"):
        info.error = _error_message(obj["error"])
        return
    for choice in obj.get("choices") or []:
        part = choice.get("delta" if streamed else "message") or {}
        piece = part.get("content") or choice.get("text")
        if piece:
            texts.append(piece)
        piece = part.get("reasoning")
        if piece:
            thoughts.append(piece)
        if streamed:
            for delta in part.get("tool_calls") or []:
                _merge_tool_call_delta(info.tool_calls, delta)
        else:
            info.tool_calls.extend(part.get("tool_calls") or [])
        if choice.get("finish_reason"):
            info.done = True
            info.done_reason = choice["finish_reason"]
    usage = obj.get("usage")
    # /v1/completions with include_usage puts zero usage on every chunk; keep the real one.
    if isinstance(usage, dict) and (usage.get("total_tokens") or info.input_tokens is None):
        info.input_tokens = usage.get("prompt_tokens")
        info.output_tokens = usage.get("completion_tokens")
    if obj.get("object") == "list":  # embeddings
        info.done = True


def _loads(data: bytes):
    """orjson (5x faster on stream lines, bench/proxy.py), json for what it refuses (NaN,
    integers over 64 bits), so parsing accepts what Ollama's clients may send."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _json_objects(lines: list[bytes]) -> list[dict]:
    """The JSON objects among stream lines (or SSE data), skipping what is not one. The lines
    are parsed as one array first (a single orjson call: 100 lines in a fraction of the time
    of 100 calls); only a reply with a bad line is read line by line."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        return []
    try:
        parsed = orjson.loads(b"[" + b",".join(lines) + b"]")
    except orjson.JSONDecodeError:
        parsed = []
        for line in lines:
            try:
                parsed.append(_loads(line))
            except ValueError:
                continue  # a line cut by the retention cap, or not JSON at all
    return [obj for obj in parsed if isinstance(obj, dict)]


def parse_response(path: str, content_type: str, body: bytes) -> ResponseInfo:
    """Text, tokens and timings from a reply's bytes (NDJSON, SSE or one JSON body)."""
    info = ResponseInfo()
    if not body:
        return info
    texts: list[str] = []
    thoughts: list[str] = []
    if "text/event-stream" in content_type:
        frames = [
            line[5:]
            for line in body.split(b"\n")
            if line.startswith(b"data:") and b"[DONE]" not in line
        ]
        objects = _json_objects(frames)
        for obj in objects:
            _read_openai(info, obj, True, texts, thoughts)
    else:
        objects = _json_objects(body.split(b"\n"))
        if path.startswith("/v1/"):
            for obj in objects:
                _read_openai(info, obj, False, texts, thoughts)
        else:
            for obj in objects:
                _read_native(info, obj, texts, thoughts)
    info.chunks = len(objects)
    info.text = "".join(texts)
    info.thinking = "".join(thoughts)
    return info


# --- Several upstreams' model lists (proxy.backends) ---------------------------------------

# What the merged lists answer: the list's key in the reply, and the key that names a model.
MERGED_LISTS = {
    "/api/tags": ("models", "name"),
    "/api/ps": ("models", "name"),
    "/v1/models": ("data", "id"),
}


def listed_models(path: str, payload: bytes) -> list[dict]:
    """The entries of an `/api/tags`, `/api/ps` or `/v1/models` reply (empty when unreadable)."""
    key, _name = MERGED_LISTS[path]
    try:
        data = _loads(payload)
    except ValueError:
        return []
    entries = data.get(key) if isinstance(data, dict) else None
    return [entry for entry in entries or [] if isinstance(entry, dict)]


def model_name(path: str, entry: dict) -> str:
    name = entry.get(MERGED_LISTS[path][1]) or entry.get("model") or ""
    return name if isinstance(name, str) else ""


def hosted_tag(model_id: str) -> dict:
    """A hosted API's model as an `/api/tags` entry, so Ollama clients can pick it: no size,
    digest or details are known. Tagged as Ollama tags every model (`gpt-4o-mini:latest`):
    clients such as Open WebUI add `:latest` to an untagged name and then look it up in the
    list; the proxy sends the API its own id back (proxy.backends.Upstream.own_id)."""
    name = model_id if ":" in model_id.rsplit("/", 1)[-1] else f"{model_id}:latest"
    return {
        "name": name,
        "model": name,
        "modified_at": "0001-01-01T00:00:00Z",
        "size": 0,
        "digest": "",
        "details": {
            "parent_model": "",
            "format": "",
            "family": "",
            "families": None,
            "parameter_size": "",
            "quantization_level": "",
        },
    }


def merged_list(path: str, entries: list[dict]) -> bytes:
    """One reply listing every upstream's entries; a model listed twice is listed once, except
    in `/api/ps`, where each upstream's loaded copy is its own entry."""
    key, _name = MERGED_LISTS[path]
    if path != "/api/ps":
        seen: set[str] = set()
        unique = []
        for entry in entries:
            name = model_name(path, entry)
            if name not in seen:
                seen.add(name)
                unique.append(entry)
        entries = unique
    reply = {"object": "list", key: entries} if path == "/v1/models" else {key: entries}
    return orjson.dumps(reply)


# --- Chat turns, for conversations (proxy.conversations) -----------------------------------


def is_chat(path: str) -> bool:
    """A route whose requests carry a chat history (`messages`)."""
    return MODEL_ROUTES.get(path) == "chat"


def reply_turn(text: str, tool_calls: list | None) -> dict:
    """A reply as the turn a client sends back with its next request (in the recorded shape
    of `parse_request`'s messages)."""
    turn = {"role": "assistant", "content": text}
    if tool_calls:
        turn["tool_calls"] = tool_calls
    return turn


def _tool_call_identity(call: Any) -> list:
    """A tool call by name and arguments: native Ollama sends arguments as an object, OpenAI as
    JSON text, and the OpenAI SDK sends a call back with a `type` its stream never had."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return [None, call]
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # not JSON: compared as the text it is
            arguments = json.loads(arguments)
    return [function.get("name"), arguments]


def turn_identity(turn: dict) -> list:
    """What makes two recorded turns the same turn of a history: role, text, images (by count:
    payloads are not recorded), tool calls and the tool answered. Not the thinking, which
    clients drop or keep as they like when they send a history back."""
    return [
        turn.get("role", ""),
        turn.get("content", ""),
        turn.get("images") or 0,
        [_tool_call_identity(call) for call in turn.get("tool_calls") or []],
        turn.get("tool_name") or turn.get("tool_call_id") or turn.get("name") or "",
    ]


def readable_turns(turns: list) -> str:
    """Recorded turns as the prompt text `parse_request` makes of a whole history."""
    blocks = []
    for turn in turns:
        text = turn.get("content", "")
        images = turn.get("images") or 0
        if images:
            text = f"{text}\n" + "[image]" * images if text else "[image]" * images
        blocks.append(f"[{turn.get('role', '')}]\n{text}")
    return "\n\n".join(blocks)
