"""Simulated Ollama server for tests, demos and benchmarks.

A small aiohttp application that speaks the Ollama HTTP API byte-for-byte the
way real Ollama (Go + gin) does, without a model: answers are deterministic
text from a word list, timings come from a configurable pacing model.
The wire details follow ``/work/shared/reference/ollama-api.md`` (§0.2 encoding,
§0.4 stream defaults, §0.5 content types, §2 native endpoints, §3 errors,
§5 OpenAI-compatible endpoints, §9 checklist).

Only aiohttp and the standard library are used, so the module runs standalone::

    python -m proxy.simulator --port 11434 [--host 127.0.0.1] [--tokens-per-second 50]
        [--ttft 0.05] [--default-tokens 24] [--max-parallel N] [--max-queue N]
        [--ollama-version 0.33.0] [--models llama3.2,qwen3]

(``python manage.py simulate_ollama`` accepts the same options.)

Routes
------
Native: ``HEAD|GET /``, ``HEAD|GET /api/version``, ``HEAD|GET /api/tags``,
``GET /api/ps``, ``POST /api/show``, ``POST /api/generate``, ``POST /api/chat``,
``POST /api/embed``, ``POST /api/embeddings``, ``POST /api/pull``.
OpenAI-compatible: ``POST /v1/chat/completions``, ``POST /v1/completions``,
``POST /v1/embeddings``, ``GET /v1/models``, ``GET /v1/models/{model}``.
``OPTIONS`` on any path answers 204 (Ollama's host middleware does the same).
Anything else: gin's ``404 page not found`` / ``405 method not allowed`` (+ ``Allow``).

Built-in models: ``llama3.2`` (completion, tools), ``qwen3`` (completion, tools,
thinking), ``llava`` (completion, vision), ``all-minilm`` (embedding only).
Names match case-insensitively with the ``:latest`` default tag.

Generation model
----------------
* Content tokens come from :data:`PASSAGE` (see :func:`simulated_text`), so a
  test can compute the expected answer: ``simulated_text(n)``.
* Token count: ``X-Sim-Tokens`` header, else ``options.num_predict`` /
  ``max_tokens`` (done_reason ``length``), else ``default_tokens``
  (done_reason ``stop``). ``num_predict`` smaller than a fixed answer
  (``X-Sim-Tokens``/``X-Sim-Text``/``format``) cuts it with ``length``.
* Thinking models (``qwen3``) emit :data:`THINKING_PASSAGE` tokens as
  ``thinking`` chunks first when ``think`` is true or absent; they count in
  ``eval_count`` but not against the token budget.
* Chat with a non-empty ``tools`` list answers with one tool call for the first
  tool (arguments sampled from its JSON schema) unless the last message is a
  ``tool`` result, in which case it answers with text.
* ``format`` (``"json"`` or a schema) makes the content a JSON document.
* ``options.stop`` / OpenAI ``stop`` strings end the answer early (``stop``).
* ``prompt_eval_count`` is :func:`estimate_tokens` of the prompt (whitespace
  words) plus a fixed template overhead (+576 per image on vision models).
* Pacing: the first token is written ``ttft`` seconds after the request (the
  HTTP headers go out with it, like Ollama), then one token every
  ``1 / tokens_per_second`` seconds; ``tokens_per_second = 0`` disables all
  pacing (benchmarks). ``load_duration`` ~ queue wait + ttft,
  ``eval_duration`` ~ tokens / tps, ``total_duration`` = wall time.
* Concurrency: ``max_parallel`` requests hold a generation slot at once
  (0 = unlimited); up to ``max_queue`` more wait; beyond that Ollama's 503
  ``server busy, please try again.  maximum pending requests exceeded``.

Per-request knobs (request headers; the proxy forwards them)
------------------------------------------------------------
``X-Sim-Tokens: N``
    Answer with exactly N content tokens (done_reason ``stop``).
``X-Sim-TPS: float``
    Tokens per second for this request (0 = no pacing).
``X-Sim-TTFT: seconds``
    Delay before the first byte (model load time) for this request. On the
    other routes (``/api/show``, ``/api/tags``…) it delays the answer too.
``X-Sim-Fail: midstream``
    After two chunks, write ``{"error":"an error was encountered while running
    the model: unexpected EOF"}`` as the last NDJSON line of the 200 stream
    (non-streaming requests get that message as a 500).
``X-Sim-Fail: 500``
    500 ``{"error":"llama runner process has terminated: exit status 2"}``
    after the load delay (scheduler error, ``application/json; charset=utf-8``).
``X-Sim-Fail: <other status>``
    Runner error before the first byte, e.g. 429 ``rate limit exceeded`` or
    503 ``model is overloaded``; a streaming request gets it with
    ``Content-Type: application/json`` like Ollama's ``streamResponse``.
``X-Sim-Fail: drop``
    After two chunks the server aborts the connection without finishing the
    chunked stream (a crashing Ollama); counted as ``dropped``, not as a client
    disconnect. Non-streaming requests get the ``midstream`` 500 instead.
``X-Sim-Split-UTF8: 1``
    The answer is :data:`SPLIT_UTF8_TOKENS` ("héllo wörld 日本語 🌍" …) and every
    stream line/frame is written in two writes split inside a multi-byte UTF-8
    character, ~5 ms apart, so they arrive as separate chunks/TCP segments.
``X-Sim-Text: <url-encoded text>``
    Answer with exactly this text, tokenised into whitespace-led words.

Observability (not part of Ollama)
----------------------------------
``GET /_sim/stats``
    Counters ``requests``, ``completed``, ``disconnects``, ``dropped``
    (``X-Sim-Fail: drop``), ``rejected`` (503), ``generated_tokens``; gauges
    ``in_flight``, ``active`` (holding a generation slot), ``queued``; plus
    ``last_request`` = ``{"method","path","query"(raw, still %-encoded),
    "headers"(lower-cased),"body","body_encoding","body_length"}`` (body as
    text ``utf-8`` or ``base64``, kept up to 4 MiB), ``last_response`` (the
    exact body bytes written, as text or base64 with ``last_response_encoding``;
    :meth:`RunningSimulator.stats` gives ``bytes``) and ``last_response_status``.
``GET /_sim/requests``
    The last 100 recorded requests, oldest first.
``POST /_sim/reset``
    Zero the counters, forget recorded requests, loaded (``/api/ps``) and
    pulled models. Gauges (``in_flight``, ``active``, ``queued``) stay live.
``GET /_sim/wait?disconnects=1&timeout=5``
    Long-poll until every given counter is reached (gauges must be equal,
    the other counters at least the value): 200 + stats, or 408 + stats.

A disconnect is a client that goes away before the response is complete
(including while it waits for ttft or in the queue); generation stops at once.
Detecting it relies on aiohttp's ``handler_cancellation=True`` (set by
:class:`RunningSimulator` and :func:`serve`; pass it yourself when serving
:func:`build_app` another way).

Python API
----------
``SimulatorConfig``
    Dataclass: host, port, tokens_per_second, ttft, default_tokens,
    max_parallel, max_queue, version, models (None = all built-ins).
``build_app(config) -> aiohttp.web.Application``
``RunningSimulator(config=None, **overrides)``
    Context manager serving from a background thread with its own loop; a
    free port unless ``port`` says otherwise. ``url``, ``port``, ``config``,
    ``stats()``, ``reset()``, ``wait_for(*, timeout=5.0, **counters)`` (returns
    the stats or raises ``TimeoutError``) and ``await wait_for_async(...)``.
``serve(config)``, ``main(argv=None)``, ``add_arguments(parser)``,
``config_from_options(options)``
    The CLI and ``manage.py simulate_ollama`` building blocks.
``simulated_text(n)``, ``simulated_tokens(n)``, ``estimate_tokens(text)``,
``go_json(obj)``
    For computing expected answers and bytes in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import random
import re
import signal
import socket
import struct
import threading
import time
import urllib.parse
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from aiohttp import web

__all__ = [
    "BUILTIN_MODELS",
    "BUSY_MESSAGE",
    "MIDSTREAM_MESSAGE",
    "PASSAGE",
    "RUNNER_CRASH_MESSAGE",
    "SPLIT_UTF8_TOKENS",
    "THINKING_PASSAGE",
    "RunningSimulator",
    "SimulatorConfig",
    "add_arguments",
    "build_app",
    "config_from_options",
    "estimate_tokens",
    "go_json",
    "main",
    "serve",
    "simulated_text",
    "simulated_tokens",
]

# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


@dataclass
class SimulatorConfig:
    """Server-wide settings; every field can be overridden per request by a knob."""

    host: str = "127.0.0.1"
    port: int = 11434
    tokens_per_second: float = 50.0
    ttft: float = 0.05
    default_tokens: int = 24
    max_parallel: int = 0
    max_queue: int = 512
    version: str = "0.33.0"
    # Installed model names (None = every built-in model). Others can be pulled.
    models: tuple[str, ...] | None = None


# --------------------------------------------------------------------------
# Go-compatible encoding
# --------------------------------------------------------------------------


class RawJSON:
    """Pre-encoded JSON text spliced verbatim into :func:`go_json` output."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def go_json(obj: Any) -> bytes:
    """Encode like Go's ``json.Marshal``: compact, ``<>&`` escaped, raw UTF-8.

    Dict order is kept (callers build dicts in Go struct field order);
    :class:`RawJSON` values are inserted as-is (used for Go float formatting).
    """
    raws: list[str] = []

    def splice(value: Any) -> str:
        if isinstance(value, RawJSON):
            raws.append(value.text)
            return f"\x00raw{len(raws) - 1}\x00"
        raise TypeError(f"cannot encode {type(value).__name__}")

    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=splice)
    text = (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
    for index, raw in enumerate(raws):
        text = text.replace(f'"\\u0000raw{index}\\u0000"', raw, 1)
    return text.encode("utf-8")


_FLOAT32 = struct.Struct("<f")


def _to_float32(value: float) -> float:
    return _FLOAT32.unpack(_FLOAT32.pack(value))[0]


def _shortest_float32_digits(value: float) -> str:
    target = _to_float32(value)
    for precision in range(9):
        text = f"{target:.{precision}e}"
        if _to_float32(float(text)) == target:
            return text
    return f"{target:.8e}"


def go_float(value: float, bits: int = 64) -> str:
    """Format a float the way Go's encoding/json does for float32/float64."""
    if value == 0:
        return "0"
    digits = _shortest_float32_digits(value) if bits == 32 else repr(value)
    number = Decimal(digits)
    magnitude = abs(value)
    if 1e-6 <= magnitude < 1e21:
        text = format(number, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    # Go writes 1e-07 then strips the exponent's leading zero: 1e-7.
    return format(number.normalize(), "e").replace("E", "e")


def go_float_list(values: Iterable[float], bits: int = 32) -> RawJSON:
    """A JSON array of Go-formatted floats."""
    return RawJSON("[" + ",".join(go_float(v, bits) for v in values) + "]")


_time_cache: dict[tuple[int, bool], tuple[str, str]] = {}


def go_time(ns: int | None = None, *, local: bool = False) -> str:
    """RFC 3339 with trimmed nanoseconds, like Go's ``time.Time`` JSON encoding.

    Response ``created_at`` is UTC (``Z``); file times use local time + offset.
    """
    if ns is None:
        ns = time.time_ns()
    seconds, fraction = divmod(ns, 1_000_000_000)
    cached = _time_cache.get((seconds, local))
    if cached is None:
        moment = datetime.fromtimestamp(seconds, UTC)
        if local:
            moment = moment.astimezone()
        offset = moment.utcoffset()
        zone = "Z"
        if offset:
            minutes = int(offset.total_seconds()) // 60
            sign = "+" if minutes >= 0 else "-"
            zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        cached = (moment.strftime("%Y-%m-%dT%H:%M:%S"), zone)
        if len(_time_cache) > 4096:
            _time_cache.clear()
        _time_cache[(seconds, local)] = cached
    stamp, zone = cached
    frac = f".{fraction:09d}".rstrip("0") if fraction else ""
    return f"{stamp}{frac}{zone}"


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)([a-zµμ]*)")


def parse_go_duration(text: str) -> float:
    """Parse a Go duration string (``"10m"``, ``"1h30m"``) into seconds."""
    body = text
    sign = 1.0
    if body[:1] in "+-" and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    position = 0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if not match:
            raise ValueError(f'time: invalid duration "{text}"')
        number, unit = match.groups()
        if not unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if unit not in _DURATION_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(number) * _DURATION_UNITS[unit]
        position = match.end()
    return sign * total


# --------------------------------------------------------------------------
# Errors and request decoding (gin ShouldBindJSON semantics)
# --------------------------------------------------------------------------

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
MIDSTREAM_MESSAGE = "an error was encountered while running the model: unexpected EOF"
RUNNER_CRASH_MESSAGE = "llama runner process has terminated: exit status 2"
RUNNER_MESSAGES = {429: "rate limit exceeded", 503: "model is overloaded"}


class ApiError(Exception):
    """An Ollama error reply: ``{"error": message}`` with an HTTP status.

    ``from_stream`` marks errors raised inside Ollama's ``streamResponse``
    before the first byte, which are sent as ``application/json`` (no charset).
    """

    def __init__(self, status: int, message: str, *, from_stream: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.from_stream = from_stream


class ClientGone(Exception):
    """The client closed the connection while we were writing to it."""

    def __init__(self, response: web.StreamResponse | None) -> None:
        super().__init__("client disconnected")
        self.response = response


class ServerDrop(Exception):
    """We aborted the connection on purpose (``X-Sim-Fail: drop``)."""

    def __init__(self, response: web.StreamResponse | None) -> None:
        super().__init__("connection dropped by the simulator")
        self.response = response


def _quote_char(char: str) -> str:
    # Go's encoding/json quoteChar: 'x', '\'' and '"' special cases.
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    escaped = json.dumps(char, ensure_ascii=False)[1:-1]
    return f"'{escaped}'"


def _innermost_container(text: str, position: int) -> str:
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:position]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _go_syntax_error(text: str, error: json.JSONDecodeError) -> str:
    """Translate a Python JSON error into the message Go's decoder would give."""
    position = error.pos
    rest = text[position:].lstrip() if error.msg.startswith("Illegal trailing") else ""
    if error.msg.startswith("Unterminated string") or position >= len(text):
        return "unexpected EOF"
    char = text[position]
    if error.msg.startswith("Illegal trailing comma before end of object"):
        return (
            f"invalid character {_quote_char(rest[:1])} looking for beginning of object key string"
        )
    if error.msg.startswith("Illegal trailing comma before end of array"):
        return f"invalid character {_quote_char(rest[:1])} looking for beginning of value"
    if error.msg.startswith("Expecting property name"):
        return f"invalid character {_quote_char(char)} looking for beginning of object key string"
    if error.msg.startswith("Expecting ':' delimiter"):
        return f"invalid character {_quote_char(char)} after object key"
    if error.msg.startswith("Expecting ',' delimiter"):
        where = (
            "object key:value pair"
            if _innermost_container(text, position) == "{"
            else "array element"
        )
        return f"invalid character {_quote_char(char)} after {where}"
    if error.msg.startswith("Invalid control character"):
        return f"invalid character {_quote_char(char)} in string literal"
    if error.msg.startswith("Invalid \\escape"):
        escape = _quote_char(text[position + 1 : position + 2])
        return f"invalid character {escape} in string escape code"
    return f"invalid character {_quote_char(char)} looking for beginning of value"


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError("Expecting value", name, 0)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _go_type_name(value: Any) -> str:
    """Go's ``%T`` of a decoded ``any`` value."""
    if value is None:
        return "<nil>"
    return {
        "bool": "bool",
        "number": "float64",
        "string": "string",
        "array": "[]interface {}",
        "object": "map[string]interface {}",
    }[_json_kind(value)]


# Field type codes: kind the JSON value must have, and the Go type named in errors.
_STRING = ("string", "string")
_BOOL = ("bool", "bool")
_INT = ("int", "int")
_FLOAT = ("float", "float64")
_OBJECT = ("object", "map[string]interface {}")
_ANY = ("any", "")


def _fields(**spec: tuple[str, str]) -> dict[str, tuple[str, str]]:
    return spec


GENERATE_FIELDS = _fields(
    model=_STRING,
    prompt=_STRING,
    suffix=_STRING,
    system=_STRING,
    template=_STRING,
    context=("array", "[]int"),
    stream=_BOOL,
    raw=_BOOL,
    format=_ANY,
    keep_alive=_ANY,
    images=("array", "[]api.ImageData"),
    options=_OBJECT,
    think=_ANY,
    truncate=_BOOL,
    shift=_BOOL,
    logprobs=_BOOL,
    top_logprobs=_INT,
)
CHAT_FIELDS = _fields(
    model=_STRING,
    messages=("array", "[]api.Message"),
    tools=("array", "api.Tools"),
    stream=_BOOL,
    format=_ANY,
    keep_alive=_ANY,
    options=_OBJECT,
    think=_ANY,
    truncate=_BOOL,
    shift=_BOOL,
    logprobs=_BOOL,
    top_logprobs=_INT,
)
MESSAGE_FIELDS = _fields(
    role=_STRING,
    content=_STRING,
    thinking=_STRING,
    images=("array", "[]api.ImageData"),
    tool_calls=("array", "[]api.ToolCall"),
    tool_name=_STRING,
    tool_call_id=_STRING,
)
EMBED_FIELDS = _fields(
    model=_STRING, input=_ANY, truncate=_BOOL, dimensions=_INT, keep_alive=_ANY, options=_OBJECT
)
EMBEDDINGS_FIELDS = _fields(model=_STRING, prompt=_STRING, keep_alive=_ANY, options=_OBJECT)
SHOW_FIELDS = _fields(model=_STRING, name=_STRING, system=_STRING, verbose=_BOOL, options=_OBJECT)
PULL_FIELDS = _fields(
    model=_STRING, name=_STRING, insecure=_BOOL, username=_STRING, password=_STRING, stream=_BOOL
)
OPENAI_CHAT_FIELDS = _fields(
    model=_STRING,
    messages=("array", "[]openai.Message"),
    stream=_BOOL,
    stream_options=("object", "openai.StreamOptions"),
    max_tokens=_INT,
    seed=_INT,
    stop=_ANY,
    temperature=_FLOAT,
    frequency_penalty=_FLOAT,
    presence_penalty=_FLOAT,
    top_p=_FLOAT,
    response_format=("object", "openai.ResponseFormat"),
    tools=("array", "[]api.Tool"),
    reasoning=("object", "openai.Reasoning"),
    reasoning_effort=_STRING,
    logprobs=_BOOL,
    top_logprobs=_INT,
)
OPENAI_COMPLETION_FIELDS = _fields(
    model=_STRING,
    prompt=_STRING,
    frequency_penalty=("float", "float32"),
    max_tokens=_INT,
    presence_penalty=("float", "float32"),
    seed=_INT,
    stop=_ANY,
    stream=_BOOL,
    stream_options=("object", "openai.StreamOptions"),
    temperature=("float", "float32"),
    top_p=("float", "float32"),
    suffix=_STRING,
    logprobs=_INT,
)
OPENAI_EMBED_FIELDS = _fields(input=_ANY, model=_STRING, dimensions=_INT, encoding_format=_STRING)


def _type_error(value: Any, go_type: str, where: str) -> str:
    kind = _json_kind(value)
    if kind == "number":
        kind = f"number {json.dumps(value)}" if go_type in ("int", "[]int") else "number"
    return f"json: cannot unmarshal {kind} into Go struct field {where} of type {go_type}"


def _check_value(value: Any, code: tuple[str, str], where: str) -> None:
    expected, go_type = code
    if value is None or expected == "any":
        return
    kind = _json_kind(value)
    ok = {
        "string": kind == "string",
        "bool": kind == "bool",
        "int": kind == "number" and float(value).is_integer(),
        "float": kind == "number",
        "array": kind == "array",
        "object": kind == "object",
    }[expected]
    if not ok:
        raise ApiError(400, _type_error(value, go_type, where))


def _bind_fields(obj: dict[str, Any], spec: dict[str, tuple[str, str]], struct_name: str) -> dict:
    """Keep known keys (case-insensitively, last one wins) and type-check them."""
    lowered = {name.lower(): name for name in spec}
    bound: dict[str, Any] = {}
    for key, value in obj.items():
        name = key if key in spec else lowered.get(key.lower())
        if name is None:
            continue
        _check_value(value, spec[name], f"{struct_name}.{name}")
        if value is not None:
            bound[name] = value
        else:
            bound.pop(name, None)
    return bound


def decode_body(
    raw: bytes,
    spec: dict[str, tuple[str, str]],
    go_type: str,
    *,
    eof_message: str = "missing request body",
) -> dict[str, Any]:
    """Decode a request body like gin's ``ShouldBindJSON`` into a dict.

    Reads only the first JSON value, ignores the request Content-Type and
    unknown keys, and raises :class:`ApiError` (400) with Go's messages.
    """
    text = raw.decode("utf-8", errors="replace").lstrip(" \t\r\n")
    if not text:
        raise ApiError(400, eof_message)
    try:
        value, _ = _DECODER.raw_decode(text)
    except json.JSONDecodeError as error:
        raise ApiError(400, _go_syntax_error(text, error)) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(
            400, f"json: cannot unmarshal {_json_kind(value)} into Go value of type {go_type}"
        )
    return _bind_fields(value, spec, go_type.rsplit(".", 1)[-1])


def _decode_base64_image(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
        bad = next((i for i, c in enumerate(data) if c not in alphabet), len(data) - len(data) % 4)
        raise ApiError(400, f"illegal base64 data at input byte {bad}") from None


def _parse_keep_alive(value: Any) -> float | None:
    """Seconds to keep the model loaded (``math.inf`` = forever), None if absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(400, f"Unsupported type: '{_go_type_name(value)}'")
    if isinstance(value, str):
        try:
            seconds = parse_go_duration(value)
        except ValueError as error:
            raise ApiError(400, str(error)) from None
    else:
        seconds = float(value)
    return math.inf if seconds < 0 else seconds


# --------------------------------------------------------------------------
# Model catalogue
# --------------------------------------------------------------------------

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
_PART = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}"
_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,349}")
_PART_RE = re.compile(_PART)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}")


@dataclass(frozen=True)
class ModelName:
    """A parsed ``[host/][namespace/]model[:tag]`` reference."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName | None:
        """Parse with Ollama's defaults; None when the name is invalid."""
        name = text.split("@", 1)[0]
        tag = "latest"
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1 :]
        parts = name.split("/")
        if len(parts) > 3 or not parts[-1]:
            return None
        host = parts[-3] if len(parts) == 3 else DEFAULT_HOST
        namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
        model = parts[-1]
        valid = (
            _HOST_RE.fullmatch(host)
            and _PART_RE.fullmatch(namespace)
            and _PART_RE.fullmatch(model)
            and _TAG_RE.fullmatch(tag)
        )
        return cls(host, namespace, model, tag) if valid else None

    @property
    def key(self) -> str:
        """Case-insensitive identity used for lookups."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}".lower()

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def short(self) -> str:
        """Ollama's DisplayShortest: ``llama3.2:latest``, ``user/model:tag``."""
        prefix = ""
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"


@dataclass(frozen=True)
class ModelSpec:
    """A simulated installed model."""

    name: str
    family: str
    families: tuple[str, ...]
    parameter_size: str
    quantization_level: str
    size: int
    digest: str
    layer_digest: str
    capabilities: tuple[str, ...]
    context_length: int
    embedding_length: int
    modified_ns: int
    parameter_count: int
    template: str = ""
    parameters: tuple[tuple[str, str], ...] = ()
    license: str = ""
    architecture: str = ""

    @property
    def ref(self) -> ModelName:
        parsed = ModelName.parse(self.name)
        assert parsed is not None
        return parsed

    def has(self, capability: str) -> bool:
        return capability in self.capabilities


_LLAMA_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n{{ if .System }}{{ .System }}{{ end }}"
    "<|eot_id|>{{ range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_QWEN_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
)
_LLAVA_TEMPLATE = "[INST] {{ if .System }}{{ .System }} {{ end }}{{ .Prompt }} [/INST]"

BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="llama3.2:latest",
        family="llama",
        families=("llama",),
        parameter_size="3.2B",
        quantization_level="Q4_K_M",
        size=2019393189,
        digest="a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        layer_digest="dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff",
        capabilities=("completion", "tools"),
        context_length=131072,
        embedding_length=3072,
        modified_ns=1_746_405_464_706_015_396,
        parameter_count=3212749888,
        template=_LLAMA_TEMPLATE,
        parameters=(
            ("stop", '"<|start_header_id|>"'),
            ("stop", '"<|end_header_id|>"'),
            ("stop", '"<|eot_id|>"'),
        ),
        license=(
            "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\n"
            "Llama 3.2 Version Release Date: September 25, 2024"
        ),
        architecture="llama",
    ),
    ModelSpec(
        name="qwen3:latest",
        family="qwen3",
        families=("qwen3",),
        parameter_size="8.2B",
        quantization_level="Q4_K_M",
        size=5225388164,
        digest="500a1f067a9f782620b40bee6f7b0c89e17ae61f686b92c24933e4ca4b2b8b41",
        layer_digest="a3de86cd1c132c822487ededd47a324c50491393e6565cd14bafa40d0b8e686f",
        capabilities=("completion", "tools", "thinking"),
        context_length=40960,
        embedding_length=4096,
        modified_ns=1_746_832_008_639_712_648,
        parameter_count=8190735360,
        template=_QWEN_TEMPLATE,
        parameters=(
            ("repeat_penalty", "1"),
            ("stop", '"<|im_start|>"'),
            ("stop", '"<|im_end|>"'),
            ("temperature", "0.6"),
            ("top_k", "20"),
            ("top_p", "0.95"),
        ),
        license="Apache License\nVersion 2.0, January 2004",
        architecture="qwen3",
    ),
    ModelSpec(
        name="llava:latest",
        family="llama",
        families=("llama", "clip"),
        parameter_size="7B",
        quantization_level="Q4_0",
        size=4733363377,
        digest="8dd30f6b0cb19f555f2c7a7ebda861449ea2cc76bf1f44e262931f45fc81d081",
        layer_digest="170370233dd5c5415250a2ecd5c71586352850729062ccef1496385647293868",
        capabilities=("completion", "vision"),
        context_length=32768,
        embedding_length=4096,
        modified_ns=1_743_700_000_123_456_789,
        parameter_count=7241732096,
        template=_LLAVA_TEMPLATE,
        parameters=(("stop", '"[INST]"'), ("stop", '"[/INST]"')),
        license="Apache License\nVersion 2.0, January 2004",
        architecture="llama",
    ),
    ModelSpec(
        name="all-minilm:latest",
        family="bert",
        families=("bert",),
        parameter_size="23M",
        quantization_level="F16",
        size=45960996,
        digest="1b226e2802dbb772b5fc32a58f103ca1804ef7501331012de126ab22f67475ef",
        layer_digest="797b70c4edf85907fe0a49eb85811256f65fa0f7bf52166b147fd16be2be4662",
        capabilities=("embedding",),
        context_length=512,
        embedding_length=384,
        modified_ns=1_741_000_000_500_000_000,
        parameter_count=22565376,
        license="Apache License\nVersion 2.0, January 2004",
        architecture="bert",
    ),
)
_BUILTIN_BY_KEY = {spec.ref.key: spec for spec in BUILTIN_MODELS}


def _details(spec: ModelSpec) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": spec.family,
        "families": list(spec.families),
        "parameter_size": spec.parameter_size,
        "quantization_level": spec.quantization_level,
    }


def _model_info(spec: ModelSpec, verbose: bool) -> dict[str, Any]:
    arch = spec.architecture
    info: dict[str, Any] = {
        "general.architecture": arch,
        "general.file_type": 15 if spec.quantization_level == "Q4_K_M" else 2,
        "general.parameter_count": spec.parameter_count,
        "general.quantization_version": 2,
        f"{arch}.attention.head_count": 32,
        f"{arch}.attention.head_count_kv": 8,
        f"{arch}.attention.layer_norm_rms_epsilon": RawJSON(go_float(1e-05, 32)),
        f"{arch}.block_count": 28,
        f"{arch}.context_length": spec.context_length,
        f"{arch}.embedding_length": spec.embedding_length,
        f"{arch}.rope.freq_base": RawJSON(go_float(500000.0, 32)),
        "tokenizer.ggml.bos_token_id": 128000,
        "tokenizer.ggml.eos_token_id": 128009,
        "tokenizer.ggml.model": "gpt2",
        # Without verbose Ollama nulls the huge token arrays instead of dropping them.
        "tokenizer.ggml.merges": ["Ġ t", "Ġ a", "i n"] if verbose else None,
        "tokenizer.ggml.token_type": [1, 1, 1] if verbose else None,
        "tokenizer.ggml.tokens": ["!", '"', "#"] if verbose else None,
    }
    # Go marshals map[string]any with sorted keys.
    return dict(sorted(info.items()))


def _tensors(spec: ModelSpec) -> list[dict[str, Any]]:
    return [
        {"name": "token_embd.weight", "type": "Q6_K", "shape": [spec.embedding_length, 128256]},
        {"name": "blk.0.attn_norm.weight", "type": "F32", "shape": [spec.embedding_length]},
        {"name": "output_norm.weight", "type": "F32", "shape": [spec.embedding_length]},
    ]


def _modelfile(spec: ModelSpec) -> str:
    lines = [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {spec.ref.short}",
        "",
        f"FROM /root/.ollama/models/blobs/sha256-{spec.layer_digest}",
    ]
    if spec.template:
        lines.append(f'TEMPLATE """{spec.template}"""')
    for key, value in spec.parameters:
        lines.append(f"PARAMETER {key} {value.strip(chr(34))}")
    if spec.license:
        lines.append(f'LICENSE """{spec.license}"""')
    return "\n".join(lines) + "\n"


def _parameters_text(spec: ModelSpec) -> str:
    return "\n".join(f"{key:<30} {value}" for key, value in spec.parameters)


# --------------------------------------------------------------------------
# Deterministic content
# --------------------------------------------------------------------------

PASSAGE = (
    "The sky appears blue because air molecules scatter the short blue wavelengths of "
    "sunlight far more strongly than the longer red ones, an effect physicists call "
    "Rayleigh scattering."
)
THINKING_PASSAGE = (
    "Okay, the user asked a question. Let me think it through step by step before answering."
)
SPLIT_UTF8_TOKENS = ("héllo", " wörld", " 日本語", " 🌍")

_PASSAGE_WORDS = PASSAGE.split()
_TOKEN_RE = re.compile(r"\s*\S+|\s+")
_JSON_TOKEN_RE = re.compile(r"\s*(?:\w+|[^\w\s])")


def simulated_tokens(count: int) -> list[str]:
    """The first ``count`` content tokens the simulator generates by default."""
    words = _PASSAGE_WORDS
    return [("" if i == 0 else " ") + words[i % len(words)] for i in range(max(0, count))]


def simulated_text(count: int) -> str:
    """The default answer text for ``count`` tokens."""
    return "".join(simulated_tokens(count))


def tokenize_text(text: str) -> list[str]:
    """Split text into whitespace-led tokens that join back to the same text."""
    return _TOKEN_RE.findall(text)


def estimate_tokens(text: str) -> int:
    """Deterministic prompt token estimate: the number of whitespace words."""
    return len(text.split())


def _cycle(tokens: tuple[str, ...], count: int) -> list[str]:
    return [tokens[i % len(tokens)] for i in range(count)]


def _sample_value(schema: Any, name: str) -> Any:
    """A deterministic value satisfying a (simple) JSON schema."""
    if not isinstance(schema, dict):
        return "example"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        required = schema.get("required") or list(properties)
        return {key: _sample_value(properties[key], key) for key in properties if key in required}
    if kind == "array":
        return [_sample_value(schema.get("items") or {"type": "string"}, name)]
    if kind == "integer":
        return 3
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    lowered = name.lower()
    if lowered in ("city", "location", "place"):
        return "Paris"
    if lowered in ("unit", "units", "format"):
        return "celsius"
    return f"example {name}" if name else "example"


def _tool_call(tools: list[Any]) -> dict[str, Any]:
    first = next((t for t in tools if isinstance(t, dict)), {})
    function = first.get("function") if isinstance(first.get("function"), dict) else {}
    name = function.get("name") or "tool"
    arguments = _sample_value(function.get("parameters") or {"type": "object"}, "")
    if not isinstance(arguments, dict):
        arguments = {}
    digest = hashlib.sha256(go_json([name, arguments])).hexdigest()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    call_id = "call_" + "".join(alphabet[int(digest[i : i + 2], 16) % 36] for i in range(0, 16, 2))
    return {"id": call_id, "function": {"index": 0, "name": name, "arguments": arguments}}


def _format_answer(fmt: Any) -> str:
    value = _sample_value(fmt, "") if isinstance(fmt, dict) else {"answer": simulated_text(4)}
    return go_json(value).decode("utf-8")


def _embedding(text: str, size: int, dimensions: int | None) -> list[float]:
    """An L2-normalised float32 vector derived only from the text."""
    rng = random.Random(hashlib.sha256(text.encode("utf-8")).digest())
    vector = [rng.gauss(0.0, 1.0) for _ in range(size)]
    if dimensions and 0 < dimensions < size:
        vector = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [_to_float32(x / norm) for x in vector]


def _context_ids(seed: str, count: int) -> list[int]:
    base = zlib.crc32(seed.encode("utf-8"))
    return [128000 if i == 0 else (base + i * 7919) % 128000 for i in range(count)]


# --------------------------------------------------------------------------
# Per-request knobs
# --------------------------------------------------------------------------


@dataclass
class Knobs:
    """Test steering read from ``X-Sim-*`` request headers."""

    tokens: int | None
    tps: float
    ttft: float
    fail: str | None
    split_utf8: bool
    text: str | None

    @classmethod
    def from_request(cls, request: web.Request, config: SimulatorConfig) -> Knobs:
        headers = request.headers

        def number(name: str, default: float, cast: Callable[[str], float]) -> float:
            raw = headers.get(name)
            if raw is None:
                return default
            try:
                value = cast(raw.strip())
            except ValueError:
                raise ApiError(400, f"invalid {name} header: {raw!r}") from None
            if value < 0 or math.isnan(value):
                raise ApiError(400, f"invalid {name} header: {raw!r}")
            return value

        tokens = headers.get("X-Sim-Tokens")
        text = headers.get("X-Sim-Text")
        fail = headers.get("X-Sim-Fail")
        return cls(
            tokens=int(number("X-Sim-Tokens", 0, int)) if tokens is not None else None,
            tps=number("X-Sim-TPS", config.tokens_per_second, float),
            ttft=number("X-Sim-TTFT", config.ttft, float),
            fail=fail.strip().lower() if fail else None,
            split_utf8=headers.get("X-Sim-Split-UTF8", "").strip().lower() in ("1", "true", "yes"),
            text=urllib.parse.unquote(text) if text is not None else None,
        )

    async def load_delay(self) -> None:
        if self.ttft > 0:
            await asyncio.sleep(self.ttft)

    def failure_before_output(self, *, streaming: bool) -> ApiError | None:
        """The error a numeric ``X-Sim-Fail`` asks for, raised after loading."""
        if not self.fail or not self.fail.isdigit():
            return None
        status = int(self.fail)
        if status == 500:
            return ApiError(500, RUNNER_CRASH_MESSAGE)
        try:
            default = HTTPStatus(status).phrase.lower()
        except ValueError:
            default = "simulated error"
        return ApiError(status, RUNNER_MESSAGES.get(status, default), from_stream=streaming)


# --------------------------------------------------------------------------
# Shared state: counters, model registry, admission control
# --------------------------------------------------------------------------

RECORDED_BODY_LIMIT = 4 << 20


def _text_or_base64(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


MONOTONIC_COUNTERS = (
    "requests",
    "completed",
    "disconnects",
    "dropped",
    "rejected",
    "generated_tokens",
)
GAUGES = ("in_flight", "active", "queued")


class SimState:
    """Everything mutable about one simulator instance (lives on its event loop)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.counters = dict.fromkeys(MONOTONIC_COUNTERS + GAUGES, 0)
        self.last_request: dict[str, Any] | None = None
        self.last_response: bytes | None = None
        self.last_response_status: int | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=100)
        self.installed: dict[str, ModelSpec] = {}
        self.loaded: dict[str, tuple[ModelSpec, float]] = {}
        self._changed = asyncio.Event()
        self._waiters = 0
        self._slots = asyncio.Semaphore(config.max_parallel) if config.max_parallel > 0 else None
        self._install_configured()

    def _install_configured(self) -> None:
        self.installed.clear()
        names = self.config.models
        specs = BUILTIN_MODELS if names is None else [self.builtin(name) for name in names]
        for spec in specs:
            self.installed[spec.ref.key] = spec

    @staticmethod
    def builtin(name: str) -> ModelSpec:
        """The built-in model called ``name`` (ValueError if unknown)."""
        ref = ModelName.parse(name)
        spec = _BUILTIN_BY_KEY.get(ref.key) if ref else None
        if spec is None:
            known = ", ".join(s.name for s in BUILTIN_MODELS)
            raise ValueError(f"unknown simulated model {name!r} (known: {known})")
        return spec

    # -- counters ---------------------------------------------------------

    def bump(self, name: str, delta: int = 1) -> None:
        self.counters[name] += delta
        if self._waiters:
            # Wake every long-poller; each re-checks its own condition.
            self._changed.set()
            self._changed = asyncio.Event()

    def snapshot(self) -> dict[str, Any]:
        stats: dict[str, Any] = dict(self.counters)
        stats["last_request"] = self.last_request
        stats["last_response"] = self.last_response
        stats["last_response_status"] = self.last_response_status
        return stats

    def reset(self) -> None:
        for name in MONOTONIC_COUNTERS:
            self.counters[name] = 0
        self.last_request = None
        self.last_response = None
        self.last_response_status = None
        self.recent.clear()
        self.loaded.clear()
        self._install_configured()
        self.bump("requests", 0)

    def reached(self, targets: dict[str, int]) -> bool:
        return all(
            self.counters[name] == value if name in GAUGES else self.counters[name] >= value
            for name, value in targets.items()
        )

    async def wait_for(self, targets: dict[str, int], limit: float) -> bool:
        """Wait until the counters reach ``targets``; False on timeout."""
        unknown = set(targets) - set(self.counters)
        if unknown:
            raise ValueError(f"unknown counters: {', '.join(sorted(unknown))}")
        deadline = asyncio.get_running_loop().time() + limit
        self._waiters += 1
        try:
            while not self.reached(targets):
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
            return True
        finally:
            self._waiters -= 1

    def record(self, request: web.Request, body: bytes) -> None:
        """Remember a request as ``last_request`` (body kept up to 4 MiB)."""
        text, encoding = _text_or_base64(body[:RECORDED_BODY_LIMIT])
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.last_request = {
            "method": request.method,
            "path": request.path,
            # Raw, still percent-encoded, so tests can check forwarding verbatim.
            "query": request.raw_path.partition("?")[2],
            "headers": headers,
            "body": text,
            "body_encoding": encoding,
            "body_length": len(body),
        }
        self.recent.append(self.last_request)

    # -- models -----------------------------------------------------------

    def find(self, name: str) -> ModelSpec | None:
        ref = ModelName.parse(name)
        return self.installed.get(ref.key) if ref else None

    def install(self, spec: ModelSpec) -> None:
        self.installed[spec.ref.key] = spec

    def mark_loaded(self, spec: ModelSpec, keep_alive: float | None) -> None:
        seconds = 300.0 if keep_alive is None else keep_alive
        if seconds == 0:
            self.loaded.pop(spec.ref.key, None)
            return
        # Go's "forever" is MaxInt64 ns (~292 years); cap to keep datetime happy.
        expires = time.time() + min(seconds, 292 * 365 * 86400)
        self.loaded[spec.ref.key] = (spec, expires)

    def unload(self, spec: ModelSpec) -> None:
        self.loaded.pop(spec.ref.key, None)

    # -- admission --------------------------------------------------------

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a generation slot; queue or reject (503) like Ollama's scheduler."""
        slots = self._slots
        if slots is not None:
            if slots.locked():
                if self.counters["queued"] >= self.config.max_queue:
                    self.bump("rejected")
                    raise ApiError(503, BUSY_MESSAGE)
                self.bump("queued")
                try:
                    await slots.acquire()
                finally:
                    self.bump("queued", -1)
            else:
                await slots.acquire()
        self.bump("active")
        try:
            yield
        finally:
            if slots is not None:
                slots.release()
            self.bump("active", -1)


STATE_KEY = web.AppKey("simulator_state", SimState)
BODY_KEY = web.RequestKey("simulator_body", bytes)
START_KEY = web.RequestKey("simulator_start_ns", int)
WRITTEN_KEY = web.RequestKey("simulator_written", bytearray)


def _state(request: web.Request) -> SimState:
    return request.app[STATE_KEY]


# --------------------------------------------------------------------------
# Response helpers
# --------------------------------------------------------------------------

NATIVE_JSON = "application/json; charset=utf-8"
PLAIN_JSON = "application/json"
NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"


def native_json(obj: Any, status: int = 200, content_type: str = NATIVE_JSON) -> web.Response:
    """gin ``c.JSON``: compact, no trailing newline, with Content-Length."""
    return web.Response(status=status, body=go_json(obj), headers={"Content-Type": content_type})


def native_error(error: ApiError) -> web.Response:
    content_type = PLAIN_JSON if error.from_stream else NATIVE_JSON
    return native_json({"error": error.message}, error.status, content_type)


def openai_json(obj: Any, status: int = 200) -> web.Response:
    """``json.NewEncoder(w).Encode``: compact with a trailing newline."""
    return web.Response(
        status=status, body=go_json(obj) + b"\n", headers={"Content-Type": PLAIN_JSON}
    )


def openai_error(error: ApiError) -> web.Response:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(error.status, "api_error")
    body = {"error": {"message": error.message, "type": kind, "param": None, "code": None}}
    return openai_json(body, error.status)


def plain_text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=text.encode("utf-8"),
        headers={"Content-Type": "text/plain", **(headers or {})},
    )


def _split_point(data: bytes) -> int:
    """Index just after the first lead byte of a multi-byte UTF-8 character."""
    for index, byte in enumerate(data):
        if byte >= 0xC0:
            return index + 1
    return 0


class Output:
    """Turns native Ollama response objects into one wire format.

    Subclasses mirror Ollama's layering: handlers always produce native chunks;
    the OpenAI outputs convert them like Ollama's ``middleware/openai.go``.
    """

    stream_content_type = NDJSON

    def __init__(self, request: web.Request, knobs: Knobs) -> None:
        self.request = request
        self.knobs = knobs
        self.response: web.StreamResponse | None = None

    @property
    def started(self) -> bool:
        return self.response is not None

    async def write(self, data: bytes) -> None:
        """Write one line/frame as its own chunk (headers go with the first)."""
        try:
            if self.response is None:
                self.response = web.StreamResponse(
                    headers={"Content-Type": self.stream_content_type}
                )
                await self.response.prepare(self.request)
            self.request[WRITTEN_KEY].extend(data)
            cut = _split_point(data) if self.knobs.split_utf8 else 0
            if cut:
                await self.response.write(data[:cut])
                await asyncio.sleep(0.005)
                await self.response.write(data[cut:])
            else:
                await self.response.write(data)
        except ConnectionResetError as error:
            raise ClientGone(self.response) from error
        # Yield even when pacing is off so a vanished peer is noticed promptly.
        await asyncio.sleep(0)

    async def finish(self) -> web.StreamResponse:
        assert self.response is not None
        try:
            await self.response.write_eof()
        except ConnectionResetError as error:
            raise ClientGone(self.response) from error
        return self.response

    def drop(self) -> ServerDrop:
        """Abort the connection mid-stream (``X-Sim-Fail: drop``)."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        return ServerDrop(self.response)

    # Overridden by wire formats.
    async def chunk(self, obj: dict[str, Any]) -> None:
        await self.write(go_json(obj) + b"\n")

    async def stream_error(self, message: str) -> web.StreamResponse:
        await self.write(go_json({"error": message}) + b"\n")
        return await self.finish()

    def single(self, obj: dict[str, Any]) -> web.Response:
        return native_json(obj)

    async def load_reply(self, obj: dict[str, Any], stream: bool) -> web.StreamResponse:
        # Ollama answers load/unload with c.JSON even for streaming requests.
        return self.single(obj)

    def error(self, error: ApiError) -> web.Response:
        return native_error(error)


class OpenAIOutput(Output):
    """Base for ``/v1`` outputs: SSE streams and OpenAI-shaped errors."""

    stream_content_type = EVENT_STREAM

    async def frame(self, obj: Any) -> None:
        await self.write(b"data: " + go_json(obj) + b"\n\n")

    async def load_reply(self, obj: dict[str, Any], stream: bool) -> web.StreamResponse:
        # The middleware converts whatever the handler wrote, so a streaming
        # request turns the single load reply into SSE frames.
        if not stream:
            return self.single(obj)
        await self.chunk(obj)
        return await self.finish()

    def error(self, error: ApiError) -> web.Response:
        return openai_error(error)


def _finish_reason(reason: str | None, tool_calls: bool) -> str | None:
    if not reason:
        return None
    if tool_calls and reason != "length":
        return "tool_calls"
    return reason


def _openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": call.get("id", ""),
            "index": call["function"].get("index", 0),
            "type": "function",
            "function": {
                "name": call["function"]["name"],
                "arguments": go_json(call["function"].get("arguments", {})).decode("utf-8"),
            },
        }
        for call in calls
    ]


def _usage(obj: dict[str, Any]) -> dict[str, int]:
    prompt = obj.get("prompt_eval_count", 0)
    completion = obj.get("eval_count", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class OpenAIChatOutput(OpenAIOutput):
    """``/v1/chat/completions``: SSE chunks or one ``chat.completion``."""

    def __init__(self, request: web.Request, knobs: Knobs, include_usage: bool) -> None:
        super().__init__(request, knobs)
        self.include_usage = include_usage
        self.id = f"chatcmpl-{random.randrange(999)}"
        # Every chunk carries the timestamp of the first one.
        self.created = int(time.time())
        self.role_sent = False
        self.tool_call_sent = False

    def _envelope(
        self, model: str, choices: list[Any], usage: dict | None = None
    ) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": choices,
        }
        if usage is not None:
            frame["usage"] = usage
        return frame

    async def _delta(self, model: str, delta: dict[str, Any], finish: str | None = None) -> None:
        if not self.role_sent:
            # Only the very first delta names the role.
            delta = {"role": "assistant", **delta}
            self.role_sent = True
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        await self.frame(self._envelope(model, [choice]))

    async def _content(self, model: str, message: dict[str, Any]) -> None:
        delta: dict[str, Any] = {"content": message.get("content", "")}
        if message.get("tool_calls"):
            delta["tool_calls"] = _openai_tool_calls(message["tool_calls"])
            self.tool_call_sent = True
        await self._delta(model, delta)

    async def chunk(self, obj: dict[str, Any]) -> None:
        model = obj.get("model", "")
        message = obj.get("message", {})
        thinking = message.get("thinking")
        has_content = bool(message.get("content") or message.get("tool_calls"))
        if thinking:
            await self._delta(model, {"reasoning": thinking})
        if not obj.get("done"):
            if has_content or not thinking:
                await self._content(model, message)
            return
        # The native metrics-only final chunk becomes a dedicated finish chunk.
        if has_content or not self.role_sent:
            await self._content(model, message)
        finish = _finish_reason(obj.get("done_reason"), self.tool_call_sent)
        await self._delta(model, {}, finish)
        if self.include_usage:
            await self.frame(self._envelope(model, [], _usage(obj)))
        await self.write(b"data: [DONE]\n\n")

    async def stream_error(self, message: str) -> web.StreamResponse:
        # Ollama's middleware decodes the error line as an empty chat response:
        # one empty chunk, then the stream ends without a finish chunk or [DONE].
        choice = {"index": 0, "delta": {"content": ""}, "finish_reason": None}
        await self.frame(self._envelope("", [choice]))
        return await self.finish()

    def single(self, obj: dict[str, Any]) -> web.Response:
        message = obj.get("message", {})
        calls = _openai_tool_calls(message.get("tool_calls") or [])
        reply: dict[str, Any] = {"role": "assistant", "content": message.get("content", "")}
        if message.get("thinking"):
            reply["reasoning"] = message["thinking"]
        if calls:
            reply["tool_calls"] = calls
        choice = {
            "index": 0,
            "message": reply,
            "finish_reason": _finish_reason(obj.get("done_reason"), bool(calls)),
        }
        return openai_json(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": obj.get("model", ""),
                "system_fingerprint": "fp_ollama",
                "choices": [choice],
                "usage": _usage(obj),
            }
        )


class OpenAICompletionOutput(OpenAIOutput):
    """``/v1/completions``: note the ``choices``-before-``model`` chunk order."""

    def __init__(self, request: web.Request, knobs: Knobs, include_usage: bool) -> None:
        super().__init__(request, knobs)
        self.include_usage = include_usage
        self.id = f"cmpl-{random.randrange(999)}"

    def _chunk(
        self, model: str, choices: list[Any], usage: dict[str, int] | None
    ) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion",
            "created": int(time.time()),
            "choices": choices,
            "model": model,
            "system_fingerprint": "fp_ollama",
        }
        if usage is not None:
            frame["usage"] = usage
        return frame

    async def chunk(self, obj: dict[str, Any]) -> None:
        # With include_usage every chunk carries zero usage, real usage comes last.
        usage = (
            {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            if self.include_usage
            else None
        )
        choice = {
            "text": obj.get("response", ""),
            "index": 0,
            "finish_reason": obj.get("done_reason") or None,
        }
        model = obj.get("model", "")
        await self.frame(self._chunk(model, [choice], usage))
        if not obj.get("done"):
            return
        if self.include_usage:
            await self.frame(self._chunk(model, [], _usage(obj)))
        await self.write(b"data: [DONE]\n\n")

    async def stream_error(self, message: str) -> web.StreamResponse:
        await self.chunk({"model": "", "response": ""})
        return await self.finish()

    def single(self, obj: dict[str, Any]) -> web.Response:
        choice = {
            "text": obj.get("response", ""),
            "index": 0,
            "finish_reason": obj.get("done_reason") or None,
        }
        return openai_json(
            {
                "id": self.id,
                "object": "text_completion",
                "created": int(time.time()),
                "model": obj.get("model", ""),
                "system_fingerprint": "fp_ollama",
                "choices": [choice],
                "usage": _usage(obj),
            }
        )


# --------------------------------------------------------------------------
# Inference engine (shared by generate, chat and their /v1 twins)
# --------------------------------------------------------------------------


@dataclass
class Job:
    """A validated inference request, independent of the wire format."""

    kind: str  # "generate" or "chat"
    model: str  # the request's model string, echoed verbatim
    spec: ModelSpec
    stream: bool
    prompt_tokens: int
    keep_alive: float | None
    knobs: Knobs
    thinking: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    done_reason: str = "stop"
    offered_tools: bool = False
    raw: bool = False
    context_seed: str = ""

    def pieces(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = [("thinking", t) for t in self.thinking]
        if self.tool_calls:
            out.append(("tool_calls", self.tool_calls))
        out.extend(("content", c) for c in self.content)
        return out

    @staticmethod
    def piece_tokens(kind: str, value: Any) -> int:
        if kind == "tool_calls":
            return sum(len(go_json(call["function"]["arguments"])) // 4 + 5 for call in value)
        return 1

    def chunk(self, kind: str, value: Any) -> dict[str, Any]:
        """A native ``done:false`` chunk for one piece of output."""
        if self.kind == "generate":
            obj: dict[str, Any] = {
                "model": self.model,
                "created_at": go_time(),
                "response": value if kind == "content" else "",
            }
            if kind == "thinking":
                obj["thinking"] = value
            obj["done"] = False
            return obj
        message: dict[str, Any] = {
            "role": "assistant",
            "content": value if kind == "content" else "",
        }
        if kind == "thinking":
            message["thinking"] = value
        if kind == "tool_calls":
            message["tool_calls"] = value
        return {"model": self.model, "created_at": go_time(), "message": message, "done": False}

    def final(
        self,
        metrics: dict[str, int],
        *,
        content: str = "",
        thinking: str = "",
        calls: list | None = None,
    ) -> dict[str, Any]:
        """The native ``done:true`` object (stream end, or the whole non-stream reply)."""
        if self.kind == "generate":
            obj: dict[str, Any] = {
                "model": self.model,
                "created_at": go_time(),
                "response": content,
            }
            if thinking:
                obj["thinking"] = thinking
            obj["done"] = True
            obj["done_reason"] = self.done_reason
            if not self.raw:
                total = self.prompt_tokens + metrics.get("eval_count", 0)
                obj["context"] = _context_ids(self.context_seed, total)
            obj.update(metrics)
            return obj
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        obj = {"model": self.model, "created_at": go_time(), "message": message, "done": True}
        obj["done_reason"] = self.done_reason
        obj.update(metrics)
        return obj


class Timer:
    """Wall-clock marks that become Ollama's duration metrics (ns)."""

    def __init__(self, start_ns: int) -> None:
        self.start = start_ns
        self.loaded = start_ns
        self.first: int | None = None

    def metrics(self, prompt_tokens: int, eval_count: int) -> dict[str, int]:
        end = time.perf_counter_ns()
        first = self.first if self.first is not None else end
        values = {
            "total_duration": end - self.start,
            "load_duration": self.loaded - self.start,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": first - self.loaded,
            "eval_count": eval_count,
            "eval_duration": end - first,
        }
        # Go's omitempty drops zero metrics.
        return {key: value for key, value in values.items() if value}


async def _paced(
    pieces: list[tuple[str, Any]], tps: float, timer: Timer
) -> AsyncIterator[tuple[str, Any]]:
    """Yield pieces on a fixed schedule: one every 1/tps seconds after the first."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / tps if tps > 0 else 0.0
    start = loop.time()
    timer.first = time.perf_counter_ns()
    for index, piece in enumerate(pieces):
        if interval:
            delay = start + index * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        yield piece
    if interval and pieces:
        delay = start + len(pieces) * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


def _load_reply(job: Job, reason: str) -> dict[str, Any]:
    if job.kind == "generate":
        return {
            "model": job.model,
            "created_at": go_time(),
            "response": "",
            "done": True,
            "done_reason": reason,
        }
    return {
        "model": job.model,
        "created_at": go_time(),
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": reason,
    }


async def run_load(request: web.Request, job: Job, output: Output) -> web.StreamResponse:
    """Empty prompt/messages: load (or with keep_alive 0 unload) the model."""
    state = _state(request)
    if job.keep_alive == 0:
        state.unload(job.spec)
        return await output.load_reply(_load_reply(job, "unload"), job.stream)
    async with state.slot():
        await job.knobs.load_delay()
    state.mark_loaded(job.spec, job.keep_alive)
    return await output.load_reply(_load_reply(job, "load"), job.stream)


async def run_job(request: web.Request, job: Job, output: Output) -> web.StreamResponse:
    """Schedule, wait for the simulated load, then stream or collect the answer."""
    state = _state(request)
    timer = Timer(request[START_KEY])
    async with state.slot():
        await job.knobs.load_delay()
        timer.loaded = time.perf_counter_ns()
        state.mark_loaded(job.spec, job.keep_alive)
        failure = job.knobs.failure_before_output(streaming=job.stream)
        if failure is not None:
            raise failure
        if job.stream:
            response = await _stream(job, output, timer, state)
        else:
            response = await _collect(job, output, timer, state)
    if job.keep_alive == 0:
        state.unload(job.spec)
    return response


async def _stream(job: Job, output: Output, timer: Timer, state: SimState) -> web.StreamResponse:
    failing = job.knobs.fail in ("midstream", "drop")
    pieces = job.pieces()
    fail_after = min(2, len(pieces))
    eval_count = 0
    async for sent, (kind, value) in _aenumerate(_paced(pieces, job.knobs.tps, timer)):
        if failing and sent == fail_after:
            break
        await output.chunk(job.chunk(kind, value))
        tokens = job.piece_tokens(kind, value)
        eval_count += tokens
        state.bump("generated_tokens", tokens)
    if failing:
        if job.knobs.fail == "drop":
            raise output.drop()
        return await output.stream_error(MIDSTREAM_MESSAGE)
    await output.chunk(job.final(timer.metrics(job.prompt_tokens, eval_count)))
    return await output.finish()


async def _collect(job: Job, output: Output, timer: Timer, state: SimState) -> web.Response:
    parts: dict[str, list[Any]] = {"content": [], "thinking": [], "tool_calls": []}
    pieces = job.pieces()
    fail_after = min(2, len(pieces)) if job.knobs.fail in ("midstream", "drop") else None
    eval_count = 0
    async for sent, (kind, value) in _aenumerate(_paced(pieces, job.knobs.tps, timer)):
        if sent == fail_after:
            break
        parts[kind].extend(value if kind == "tool_calls" else [value])
        tokens = job.piece_tokens(kind, value)
        eval_count += tokens
        state.bump("generated_tokens", tokens)
    if fail_after is not None:
        raise ApiError(500, MIDSTREAM_MESSAGE)
    final = job.final(
        timer.metrics(job.prompt_tokens, eval_count),
        content="".join(parts["content"]),
        thinking="".join(parts["thinking"]),
        calls=parts["tool_calls"] if job.offered_tools else None,
    )
    return output.single(final)


async def _aenumerate(items: AsyncIterator[Any]) -> AsyncIterator[tuple[int, Any]]:
    index = 0
    async for item in items:
        yield index, item
        index += 1


def _plan_content(
    job: Job, config: SimulatorConfig, num_predict: int | None, fmt: Any, stop: list[str]
) -> None:
    """Fill ``job.content`` and ``job.done_reason`` from knobs, budget and stop words."""
    knobs = job.knobs
    natural: list[str] | None = None
    if knobs.text is not None:
        natural = tokenize_text(knobs.text)
    elif knobs.split_utf8:
        natural = _cycle(
            SPLIT_UTF8_TOKENS, knobs.tokens if knobs.tokens is not None else config.default_tokens
        )
    elif fmt not in (None, ""):
        natural = _JSON_TOKEN_RE.findall(_format_answer(fmt))
    elif knobs.tokens is not None:
        natural = simulated_tokens(knobs.tokens)

    if natural is None:
        if num_predict is not None:
            tokens, reason = simulated_tokens(num_predict), "length"
        else:
            tokens, reason = simulated_tokens(config.default_tokens), "stop"
    elif num_predict is not None and num_predict < len(natural):
        tokens, reason = natural[:num_predict], "length"
    else:
        tokens, reason = natural, "stop"

    if stop:
        text = ""
        for index, token in enumerate(tokens):
            text += token
            if any(word and word in text for word in stop):
                tokens, reason = tokens[:index], "stop"
                break
    job.content = tokens
    job.done_reason = reason


def _num_predict(options: dict[str, Any]) -> int | None:
    value = options.get("num_predict")
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not float(value).is_integer()
    ):
        raise ApiError(500, 'option "num_predict" must be of type integer')
    return int(value) if value >= 0 else None


def _stop_words(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _resolve_think(value: Any, spec: ModelSpec, model: str) -> bool:
    """Ollama's think rules: default on for thinking models; levels count as on."""
    if value is None:
        return spec.has("thinking")
    if isinstance(value, str):
        if value not in ("low", "medium", "high", "max"):
            raise ApiError(400, f'invalid think value: "{value}"')
        enabled = True
    elif isinstance(value, bool):
        enabled = value
    else:
        raise ApiError(400, "invalid think value")
    if enabled and not spec.has("thinking"):
        raise ApiError(400, f'"{model}" does not support thinking')
    return enabled


# --------------------------------------------------------------------------
# Native handlers
# --------------------------------------------------------------------------


async def handle_root(request: web.Request) -> web.Response:
    """``GET|HEAD /``: the liveness probe."""
    return web.Response(
        body=b"Ollama is running", headers={"Content-Type": "text/plain; charset=utf-8"}
    )


async def handle_version(request: web.Request) -> web.Response:
    """``GET|HEAD /api/version``."""
    return native_json({"version": _state(request).config.version})


def _list_entry(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.ref.short,
        "model": spec.ref.short,
        "modified_at": go_time(spec.modified_ns, local=True),
        "size": spec.size,
        "digest": spec.digest,
        "details": _details(spec),
        "capabilities": list(spec.capabilities),
    }


def _installed_sorted(state: SimState) -> list[ModelSpec]:
    return sorted(state.installed.values(), key=lambda spec: spec.modified_ns, reverse=True)


async def handle_tags(request: web.Request) -> web.Response:
    """``GET|HEAD /api/tags``: installed models, newest first, ``[]`` when none."""
    return native_json(
        {"models": [_list_entry(spec) for spec in _installed_sorted(_state(request))]}
    )


async def handle_ps(request: web.Request) -> web.Response:
    """``GET /api/ps``: models used recently, longest remaining keep-alive first."""
    state = _state(request)
    now = time.time()
    for key, (_, expires) in list(state.loaded.items()):
        if expires <= now:
            del state.loaded[key]
    entries = []
    for spec, expires in sorted(state.loaded.values(), key=lambda item: item[1], reverse=True):
        entries.append(
            {
                "name": spec.ref.short,
                "model": spec.ref.short,
                "size": spec.size,
                "digest": spec.digest,
                "details": _details(spec),
                "expires_at": go_time(int(expires * 1e9), local=True),
                "size_vram": spec.size,
                "context_length": 4096 if spec.context_length > 4096 else spec.context_length,
            }
        )
    return native_json({"models": entries})


def show_payload(spec: ModelSpec, verbose: bool) -> dict[str, Any]:
    """The ``/api/show`` body (ShowResponse field order; ``model_info`` always)."""
    body: dict[str, Any] = {}
    if spec.license:
        body["license"] = spec.license
    body["modelfile"] = _modelfile(spec)
    if spec.parameters:
        body["parameters"] = _parameters_text(spec)
    if spec.template:
        body["template"] = spec.template
    body["details"] = _details(spec)
    body["model_info"] = _model_info(spec, verbose)
    if spec.has("vision"):
        body["projector_info"] = {
            "clip.has_vision_encoder": True,
            "clip.vision.embedding_length": 1024,
            "clip.vision.image_size": 336,
            "clip.vision.patch_size": 14,
        }
    if verbose:
        body["tensors"] = _tensors(spec)
    body["capabilities"] = list(spec.capabilities)
    body["modified_at"] = go_time(spec.modified_ns, local=True)
    return body


async def handle_show(request: web.Request) -> web.Response:
    """``POST /api/show``."""
    try:
        body = decode_body(request[BODY_KEY], SHOW_FIELDS, "api.ShowRequest")
        name = body.get("model") or body.get("name") or ""
        if not name:
            raise ApiError(400, "model is required")
        spec = _state(request).find(name)
        if spec is None:
            raise ApiError(404, f"model '{name}' not found")
    except ApiError as error:
        return native_error(error)
    return native_json(show_payload(spec, bool(body.get("verbose"))))


def _generate_job(request: web.Request, body: dict[str, Any], knobs: Knobs) -> tuple[Job, bool]:
    """Validate a native generate request; returns the job and whether it only loads."""
    state = _state(request)
    top = body.get("top_logprobs", 0)
    if top < 0 or top > 20:
        raise ApiError(400, "top_logprobs must be between 0 and 20")
    if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
        raise ApiError(400, "raw mode does not support template, system, or context")
    name = body.get("model", "")
    spec = state.find(name)
    if spec is None:
        raise ApiError(404, f"model '{name}' not found")
    if not spec.has("completion"):
        raise ApiError(400, f'"{name}" does not support generate')
    if body.get("suffix") and not spec.has("insert"):
        raise ApiError(400, f"{spec.ref.full} does not support insert")
    think = _resolve_think(body.get("think"), spec, name)
    images = body.get("images") or []
    for image in images:
        if not isinstance(image, str):
            raise ApiError(400, _type_error(image, "[]uint8", "GenerateRequest.images"))
        _decode_base64_image(image)
    options = body.get("options") or {}
    prompt = body.get("prompt", "")
    prompt_tokens = estimate_tokens(
        body.get("system", "") + " " + prompt + " " + body.get("suffix", "")
    )
    prompt_tokens += (0 if body.get("raw") else 10) + (
        576 * len(images) if spec.has("vision") else 0
    )
    job = Job(
        kind="generate",
        model=name,
        spec=spec,
        stream=body.get("stream", True),
        prompt_tokens=prompt_tokens,
        keep_alive=_parse_keep_alive(body.get("keep_alive")),
        knobs=knobs,
        raw=bool(body.get("raw")),
        context_seed=prompt,
    )
    if think:
        job.thinking = tokenize_text(THINKING_PASSAGE)
    _plan_content(
        job,
        state.config,
        _num_predict(options),
        body.get("format"),
        _stop_words(options.get("stop")),
    )
    return job, not prompt and not images


def _message_text(message: dict[str, Any]) -> str:
    return str(message.get("content") or "")


def _validate_messages(messages: list[Any]) -> list[dict[str, Any]]:
    checked = []
    for message in messages:
        if not isinstance(message, dict):
            raise ApiError(400, _type_error(message, "api.Message", "ChatRequest.messages"))
        bound = _bind_fields(message, MESSAGE_FIELDS, "ChatRequest.messages")
        for image in bound.get("images") or []:
            if not isinstance(image, str):
                raise ApiError(400, _type_error(image, "[]uint8", "ChatRequest.messages.images"))
            _decode_base64_image(image)
        checked.append(bound)
    return checked


def _chat_job(request: web.Request, body: dict[str, Any], knobs: Knobs) -> tuple[Job, bool]:
    """Validate a native chat request; returns the job and whether it only loads."""
    state = _state(request)
    top = body.get("top_logprobs", 0)
    if top < 0 or top > 20:
        raise ApiError(400, "top_logprobs must be between 0 and 20")
    name = body.get("model", "")
    if ModelName.parse(name) is None:
        raise ApiError(400, "model is required")
    spec = state.find(name)
    if spec is None:
        raise ApiError(404, f"model '{name}' not found")
    if not spec.has("completion"):
        raise ApiError(400, f'"{name}" does not support chat')
    tools = body.get("tools") or []
    if tools and not spec.has("tools"):
        raise ApiError(400, f"{spec.ref.full} does not support tools")
    think = _resolve_think(body.get("think"), spec, name)
    messages = _validate_messages(body.get("messages") or [])
    options = body.get("options") or {}
    images = sum(len(m.get("images") or []) for m in messages)
    prompt_tokens = 10 + sum(estimate_tokens(_message_text(m)) + 4 for m in messages)
    prompt_tokens += 30 * len(tools) + (576 * images if spec.has("vision") else 0)
    job = Job(
        kind="chat",
        model=name,
        spec=spec,
        stream=body.get("stream", True),
        prompt_tokens=prompt_tokens,
        keep_alive=_parse_keep_alive(body.get("keep_alive")),
        knobs=knobs,
        offered_tools=bool(tools),
    )
    if think:
        job.thinking = tokenize_text(THINKING_PASSAGE)
    answered_tool = bool(messages) and str(messages[-1].get("role", "")).lower() == "tool"
    if tools and not answered_tool and knobs.text is None:
        job.tool_calls = [_tool_call(tools)]
    else:
        stop = _stop_words(options.get("stop"))
        _plan_content(job, state.config, _num_predict(options), body.get("format"), stop)
    return job, not messages


async def _inference(
    request: web.Request,
    output: Output,
    build: Callable[[], tuple[Job, bool]],
) -> web.StreamResponse:
    """Run a validated job through an output, mapping errors to its format."""
    try:
        job, load_only = build()
        if load_only:
            return await run_load(request, job, output)
        return await run_job(request, job, output)
    except ApiError as error:
        if output.started:
            # The status line is gone already; report inside the stream.
            return await output.stream_error(error.message)
        return output.error(error)


async def handle_generate(request: web.Request) -> web.StreamResponse:
    """``POST /api/generate``."""
    try:
        knobs = Knobs.from_request(request, _state(request).config)
        body = decode_body(request[BODY_KEY], GENERATE_FIELDS, "api.GenerateRequest")
    except ApiError as error:
        return native_error(error)
    return await _inference(
        request, Output(request, knobs), lambda: _generate_job(request, body, knobs)
    )


async def handle_chat(request: web.Request) -> web.StreamResponse:
    """``POST /api/chat``."""
    try:
        knobs = Knobs.from_request(request, _state(request).config)
        body = decode_body(request[BODY_KEY], CHAT_FIELDS, "api.ChatRequest")
    except ApiError as error:
        return native_error(error)
    return await _inference(
        request, Output(request, knobs), lambda: _chat_job(request, body, knobs)
    )


def _embed_inputs(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ApiError(400, "invalid input type")


async def _embed(
    request: web.Request, body: dict[str, Any], knobs: Knobs
) -> tuple[str, list[list[float]], int, Timer]:
    """Shared ``/api/embed`` logic: returns model, vectors, prompt tokens, timer."""
    state = _state(request)
    inputs = _embed_inputs(body.get("input"))
    name = body.get("model", "")
    if not name:
        raise ApiError(404, "model '' not found")
    spec = state.find(name)
    if spec is None:
        raise ApiError(404, f'model "{name}" not found, try pulling it first')
    timer = Timer(request[START_KEY])
    async with state.slot():
        await knobs.load_delay()
        timer.loaded = time.perf_counter_ns()
        state.mark_loaded(spec, _parse_keep_alive(body.get("keep_alive")))
        failure = knobs.failure_before_output(streaming=False)
        if failure is not None:
            raise failure
        truncate = body.get("truncate", True)
        counts = []
        for text in inputs:
            count = estimate_tokens(text) + 2
            if count > spec.context_length:
                if not truncate:
                    raise ApiError(400, "the input length exceeds the context length")
                count = spec.context_length
            counts.append(count)
        timer.first = time.perf_counter_ns()
        dimensions = int(body.get("dimensions") or 0)
        vectors = [_embedding(text, spec.embedding_length, dimensions) for text in inputs]
    return name, vectors, sum(counts), timer


async def handle_embed(request: web.Request) -> web.Response:
    """``POST /api/embed``: L2-normalised float32 vectors."""
    try:
        knobs = Knobs.from_request(request, _state(request).config)
        body = decode_body(request[BODY_KEY], EMBED_FIELDS, "api.EmbedRequest")
        name, vectors, prompt_tokens, timer = await _embed(request, body, knobs)
    except ApiError as error:
        return native_error(error)
    reply: dict[str, Any] = {"model": name, "embeddings": [go_float_list(v) for v in vectors]}
    if vectors:
        metrics = timer.metrics(prompt_tokens, 0)
        for key in ("total_duration", "load_duration", "prompt_eval_count"):
            if key in metrics:
                reply[key] = metrics[key]
    return native_json(reply)


async def handle_embeddings(request: web.Request) -> web.Response:
    """``POST /api/embeddings`` (legacy): one float64 vector, not normalised."""
    state = _state(request)
    try:
        knobs = Knobs.from_request(request, state.config)
        body = decode_body(request[BODY_KEY], EMBEDDINGS_FIELDS, "api.EmbeddingRequest")
        name = body.get("model", "")
        if not name:
            raise ApiError(400, "model is required")
        spec = state.find(name)
        if spec is None:
            raise ApiError(404, f'model "{name}" not found, try pulling it first')
        async with state.slot():
            await knobs.load_delay()
            state.mark_loaded(spec, _parse_keep_alive(body.get("keep_alive")))
            failure = knobs.failure_before_output(streaming=False)
            if failure is not None:
                raise failure
    except ApiError as error:
        return native_error(error)
    prompt = body.get("prompt", "")
    vector = [x * 4.2 for x in _embedding(prompt, spec.embedding_length, None)] if prompt else []
    return native_json({"embedding": go_float_list(vector, 64)})


def _pull_lines(spec: ModelSpec) -> list[dict[str, Any]]:
    layers = [
        (spec.layer_digest, spec.size - 12_000, True),
        (hashlib.sha256(spec.template.encode()).hexdigest(), max(len(spec.template), 96), False),
        (hashlib.sha256(spec.license.encode()).hexdigest(), max(len(spec.license), 120), False),
        (hashlib.sha256(spec.name.encode()).hexdigest(), 412, False),
    ]
    lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
    for digest, total, big in layers:
        steps = (0, total // 2, total) if big else (total,)
        for completed in steps:
            line: dict[str, Any] = {
                "status": f"pulling {digest[:12]}",
                "digest": f"sha256:{digest}",
                "total": total,
            }
            if completed:
                line["completed"] = completed
            lines.append(line)
    lines += [
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    return lines


async def handle_pull(request: web.Request) -> web.StreamResponse:
    """``POST /api/pull``: progress lines; unknown models fail after the manifest line."""
    state = _state(request)
    try:
        knobs = Knobs.from_request(request, state.config)
        body = decode_body(request[BODY_KEY], PULL_FIELDS, "api.PullRequest")
        ref = ModelName.parse(body.get("model") or body.get("name") or "")
        if ref is None:
            raise ApiError(400, "invalid model name")
    except ApiError as error:
        return native_error(error)
    spec = _BUILTIN_BY_KEY.get(ref.key)
    missing = "pull model manifest: file does not exist"
    if not body.get("stream", True):
        if spec is None:
            return native_json({"error": missing}, 500, PLAIN_JSON)
        state.install(spec)
        return native_json({"status": "success"}, 200, PLAIN_JSON)
    output = Output(request, knobs)
    lines = [{"status": "pulling manifest"}] if spec is None else _pull_lines(spec)
    async for _, line in _paced(
        [("line", line) for line in lines], knobs.tps, Timer(request[START_KEY])
    ):
        await output.chunk(line)
    if spec is None:
        return await output.stream_error(missing)
    state.install(spec)
    return await output.finish()


# --------------------------------------------------------------------------
# OpenAI-compatible handlers (convert, then reuse the native logic)
# --------------------------------------------------------------------------

_IMAGE_PREFIXES = (
    "data:;base64,",
    *(f"data:image/{kind};base64," for kind in ("jpeg", "jpg", "png", "webp")),
)


def _openai_image(url: Any) -> str:
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str):
        raise ApiError(400, "invalid message format")
    if url.startswith(("http://", "https://")):
        raise ApiError(
            400, "image URLs are not currently supported, please use base64 encoded data instead"
        )
    for prefix in _IMAGE_PREFIXES:
        if url.startswith(prefix):
            data = url[len(prefix) :]
            try:
                base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "invalid message format") from None
            return data
    raise ApiError(400, "invalid image input")


def _openai_tool_call_args(calls: Any) -> list[dict[str, Any]]:
    converted = []
    for index, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function", {}) if isinstance(call, dict) else {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            raise ApiError(400, "invalid tool call arguments") from None
        converted.append(
            {"function": {"index": index, "name": function.get("name", ""), "arguments": arguments}}
        )
    return converted


def _openai_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """OpenAI chat messages → native messages (``FromChatRequest``)."""
    native: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise ApiError(
                400, _type_error(message, "openai.Message", "ChatCompletionRequest.messages")
            )
        role = message.get("role", "")
        content = message.get("content")
        extra: dict[str, Any] = {}
        if str(role).lower() == "tool" and (message.get("name") or message.get("tool_call_id")):
            extra["tool_name"] = message.get("name") or message.get("tool_call_id")
        if message.get("tool_calls"):
            extra["tool_calls"] = _openai_tool_call_args(message["tool_calls"])
        if isinstance(content, str):
            native.append({"role": role, "content": content, **extra})
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    raise ApiError(400, "invalid message format")
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    native.append({"role": role, "content": part["text"]})
                elif part.get("type") == "image_url":
                    native.append(
                        {
                            "role": role,
                            "content": "",
                            "images": [_openai_image(part.get("image_url"))],
                        }
                    )
                else:
                    raise ApiError(400, "invalid message format")
            if native and extra:
                native[-1].update(extra)
        elif message.get("tool_calls"):
            native.append({"role": role, "content": "", **extra})
        else:
            raise ApiError(400, f"invalid message content type: {_go_type_name(content)}")
    return native


_EFFORTS = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}


def _openai_think(body: dict[str, Any]) -> Any:
    reasoning = body.get("reasoning") or {}
    effort = body.get("reasoning_effort") or (
        reasoning.get("effort") if isinstance(reasoning, dict) else None
    )
    if effort is None:
        return None
    if effort not in _EFFORTS:
        raise ApiError(400, f"invalid reasoning value: '{effort}'")
    return _EFFORTS[effort]


def _openai_format(response_format: Any) -> Any:
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_object":
        return "json"
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if schema is not None else None
    return None


def _check_stop(value: Any) -> None:
    if value is None or isinstance(value, str):
        return
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                raise ApiError(400, f"invalid type for 'stop' field: {_go_type_name(item)}")
        return
    raise ApiError(400, f"invalid type for 'stop' field: {_go_type_name(value)}")


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options") or {}
    return bool(options.get("include_usage"))


async def handle_openai_chat(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    try:
        knobs = Knobs.from_request(request, _state(request).config)
        body = decode_body(
            request[BODY_KEY], OPENAI_CHAT_FIELDS, "openai.ChatCompletionRequest", eof_message="EOF"
        )
        if not body.get("messages"):
            raise ApiError(400, "[] is too short - 'messages'")
        _check_stop(body.get("stop"))
        options: dict[str, Any] = {}
        if body.get("max_tokens") is not None:
            options["num_predict"] = body["max_tokens"]
        if body.get("stop") is not None:
            options["stop"] = _stop_words(body["stop"])
        native = {
            "model": body.get("model", ""),
            "messages": _openai_messages(body["messages"]),
            "stream": bool(body.get("stream", False)),
            "options": options,
            "format": _openai_format(body.get("response_format")),
            "tools": body.get("tools") or [],
            "think": _openai_think(body),
        }
    except ApiError as error:
        return openai_error(error)
    output = OpenAIChatOutput(request, knobs, _include_usage(body))
    return await _inference(request, output, lambda: _chat_job(request, native, knobs))


async def handle_openai_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/completions``."""
    try:
        knobs = Knobs.from_request(request, _state(request).config)
        body = decode_body(
            request[BODY_KEY],
            OPENAI_COMPLETION_FIELDS,
            "openai.CompletionRequest",
            eof_message="EOF",
        )
        _check_stop(body.get("stop"))
        options: dict[str, Any] = {}
        if body.get("max_tokens") is not None:
            options["num_predict"] = body["max_tokens"]
        if body.get("stop") is not None:
            options["stop"] = _stop_words(body["stop"])
        native = {
            "model": body.get("model", ""),
            "prompt": body.get("prompt", ""),
            "suffix": body.get("suffix", ""),
            "stream": bool(body.get("stream", False)),
            "options": options,
        }
    except ApiError as error:
        return openai_error(error)
    output = OpenAICompletionOutput(request, knobs, _include_usage(body))
    return await _inference(request, output, lambda: _generate_job(request, native, knobs))


async def handle_openai_embeddings(request: web.Request) -> web.Response:
    """``POST /v1/embeddings`` (``encoding_format`` float or base64)."""
    try:
        knobs = Knobs.from_request(request, _state(request).config)
        body = decode_body(
            request[BODY_KEY], OPENAI_EMBED_FIELDS, "openai.EmbedRequest", eof_message="EOF"
        )
        encoding = body.get("encoding_format", "")
        if encoding and encoding.lower() not in ("float", "base64"):
            raise ApiError(
                400,
                f"Invalid value for 'encoding_format' = {encoding}. "
                "Supported values: ['float', 'base64'].",
            )
        value = body.get("input")
        if value == "":
            value = [""]
        if value is None or value == []:
            raise ApiError(400, "invalid input")
        native = {
            "model": body.get("model", ""),
            "input": value,
            "dimensions": body.get("dimensions"),
        }
        name, vectors, prompt_tokens, _ = await _embed(request, native, knobs)
    except ApiError as error:
        return openai_error(error)
    data = []
    for index, vector in enumerate(vectors):
        if encoding.lower() == "base64":
            embedding: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode(
                "ascii"
            )
        else:
            embedding = go_float_list(vector)
        data.append({"object": "embedding", "embedding": embedding, "index": index})
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return openai_json({"object": "list", "data": data, "model": name, "usage": usage})


def _openai_model(model_id: str, spec: ModelSpec) -> dict[str, Any]:
    ref = ModelName.parse(model_id)
    owner = ref.namespace if ref else DEFAULT_NAMESPACE
    return {
        "id": model_id,
        "object": "model",
        "created": spec.modified_ns // 1_000_000_000,
        "owned_by": owner,
    }


async def handle_openai_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: ``data`` is null when nothing is installed."""
    specs = _installed_sorted(_state(request))
    data = [_openai_model(spec.ref.short, spec) for spec in specs] or None
    return openai_json({"object": "list", "data": data})


async def handle_openai_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}``."""
    model_id = request.path[len("/v1/models/") :]
    spec = _state(request).find(model_id)
    if spec is None:
        return openai_error(ApiError(404, f"model '{model_id}' not found"))
    return openai_json(_openai_model(model_id, spec))


# --------------------------------------------------------------------------
# Simulator control endpoints
# --------------------------------------------------------------------------


def _stats_response(state: SimState, status: int = 200) -> web.Response:
    stats = state.snapshot()
    if stats["last_response"] is not None:
        text, encoding = _text_or_base64(stats["last_response"])
        stats["last_response"] = text
        stats["last_response_encoding"] = encoding
    return web.json_response(stats, status=status)


async def handle_sim_stats(request: web.Request) -> web.Response:
    """``GET /_sim/stats``."""
    return _stats_response(_state(request))


async def handle_sim_requests(request: web.Request) -> web.Response:
    """``GET /_sim/requests``: recently recorded requests, oldest first."""
    return web.json_response(list(_state(request).recent))


async def handle_sim_reset(request: web.Request) -> web.Response:
    """``POST /_sim/reset``."""
    state = _state(request)
    state.reset()
    return _stats_response(state)


async def handle_sim_wait(request: web.Request) -> web.Response:
    """``GET /_sim/wait?counter=N&timeout=S``: long-poll for counters."""
    state = _state(request)
    query = dict(request.query)
    try:
        timeout = float(query.pop("timeout", "5"))
        targets = {name: int(value) for name, value in query.items()}
        reached = await state.wait_for(targets, timeout)
    except ValueError as error:
        return web.json_response({"error": str(error)}, status=400)
    return _stats_response(state, 200 if reached else 408)


# --------------------------------------------------------------------------
# Routing (gin semantics: exact paths, 404/405 text bodies, Allow header)
# --------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Gin lists allowed methods in the order its method trees were created.
METHOD_ORDER = ("HEAD", "GET", "POST", "DELETE")

ROUTES: dict[str, dict[str, Handler]] = {
    "/": {"HEAD": handle_root, "GET": handle_root},
    "/api/version": {"HEAD": handle_version, "GET": handle_version},
    "/api/pull": {"POST": handle_pull},
    "/api/tags": {"HEAD": handle_tags, "GET": handle_tags},
    "/api/show": {"POST": handle_show},
    "/api/ps": {"GET": handle_ps},
    "/api/generate": {"POST": handle_generate},
    "/api/chat": {"POST": handle_chat},
    "/api/embed": {"POST": handle_embed},
    "/api/embeddings": {"POST": handle_embeddings},
    "/v1/chat/completions": {"POST": handle_openai_chat},
    "/v1/completions": {"POST": handle_openai_completions},
    "/v1/embeddings": {"POST": handle_openai_embeddings},
    "/v1/models": {"GET": handle_openai_models},
}
MODEL_ROUTE = re.compile(r"/v1/models/[^/]+")
SIM_ROUTES: dict[str, dict[str, Handler]] = {
    "/_sim/stats": {"GET": handle_sim_stats},
    "/_sim/requests": {"GET": handle_sim_requests},
    "/_sim/reset": {"POST": handle_sim_reset},
    "/_sim/wait": {"GET": handle_sim_wait},
}


def _methods_for(path: str) -> dict[str, Handler] | None:
    if path in ROUTES:
        return ROUTES[path]
    if MODEL_ROUTE.fullmatch(path):
        return {"GET": handle_openai_model}
    return None


async def _route_error(request: web.Request) -> web.Response:
    methods = _methods_for(request.path)
    if methods is None:
        return plain_text(404, "404 page not found")
    allowed = ", ".join(m for m in METHOD_ORDER if m in methods)
    return plain_text(405, "405 method not allowed", {"Allow": allowed})


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


# Handlers that apply the knobs themselves; other routes only honour X-Sim-TTFT.
INFERENCE_HANDLERS: frozenset[Handler] = frozenset(
    {
        handle_generate,
        handle_chat,
        handle_embed,
        handle_embeddings,
        handle_openai_chat,
        handle_openai_completions,
        handle_openai_embeddings,
    }
)


async def _run(request: web.Request, handler: Handler) -> web.StreamResponse:
    if handler not in INFERENCE_HANDLERS and "X-Sim-TTFT" in request.headers:
        # Lets tests make any route slow (e.g. to drop the client while it waits).
        try:
            knobs = Knobs.from_request(request, _state(request).config)
        except ApiError as error:
            return native_error(error)
        await knobs.load_delay()
    return await handler(request)


def _sent_bytes(request: web.Request, response: web.StreamResponse | None) -> bytes:
    if request.method == "HEAD":
        return b""
    if isinstance(response, web.Response) and not response.prepared:
        body = response.body
        return bytes(body) if isinstance(body, (bytes, bytearray)) else b""
    return bytes(request[WRITTEN_KEY])


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Single entry point: routes, records the request and tracks its outcome."""
    sim = SIM_ROUTES.get(request.path)
    if sim is not None:
        handler = sim.get(request.method)
        if handler is None:
            return plain_text(405, "405 method not allowed", {"Allow": ", ".join(sim)})
        return await handler(request)

    methods = _methods_for(request.path)
    if request.method == "OPTIONS":
        handler = _no_content
    else:
        handler = (methods or {}).get(request.method) or _route_error

    state = _state(request)
    request[START_KEY] = time.perf_counter_ns()
    request[WRITTEN_KEY] = bytearray()
    body = await request.read()
    request[BODY_KEY] = body
    state.record(request, body)
    state.bump("requests")
    state.bump("in_flight")
    outcome = "completed"
    response: web.StreamResponse | None = None
    try:
        response = await _run(request, handler)
    except ClientGone as gone:
        outcome = "disconnects"
        response = gone.response or web.Response()
    except ServerDrop as drop:
        outcome = "dropped"
        response = drop.response or web.Response()
    except asyncio.CancelledError:
        outcome = "disconnects"
        raise
    finally:
        state.last_response = _sent_bytes(request, response)
        state.last_response_status = response.status if response is not None else None
        state.bump("in_flight", -1)
        state.bump(outcome)
    return response


async def _strip_server_header(request: web.Request, response: web.StreamResponse) -> None:
    # Go's net/http sends no Server header.
    response.headers.pop("Server", None)


def build_app(config: SimulatorConfig | None = None) -> web.Application:
    """Build the aiohttp application (serve it with ``handler_cancellation=True``)."""
    config = config or SimulatorConfig()
    # Ollama has no request size limit (base64 images); aiohttp defaults to 1 MiB.
    app = web.Application(client_max_size=1 << 30)
    app[STATE_KEY] = SimState(config)
    app.router.add_route("*", "/{path:.*}", dispatch)
    app.on_response_prepare.append(_strip_server_header)
    return app


# --------------------------------------------------------------------------
# Running it: background thread for tests, CLI for humans
# --------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=1024)
    sock.setblocking(False)
    return sock


async def _start_runner(
    app: web.Application, sock: socket.socket, *, access_log: bool
) -> web.AppRunner:
    # handler_cancellation: a vanished client cancels its handler (disconnect
    # detection); a short shutdown_timeout so stopping never waits on a stream.
    extra: dict[str, Any] = {} if access_log else {"access_log": None}
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, **extra)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


class RunningSimulator:
    """Run the simulator in a background thread with its own event loop.

    ``RunningSimulator()`` listens on a free port (``port=0``) unless a config
    or ``port=`` override says otherwise. Use as a context manager::

        with RunningSimulator(tokens_per_second=0, ttft=0) as sim:
            ollama.Client(host=sim.url).list()
            sim.wait_for(completed=1)
    """

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else SimulatorConfig(port=0)
        self.config = dataclasses.replace(base, **overrides)
        self.app: web.Application | None = None
        self.url = ""
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def state(self) -> SimState:
        assert self.app is not None, "simulator is not running"
        return self.app[STATE_KEY]

    def start(self) -> RunningSimulator:
        """Bind, start serving and return once requests are accepted."""
        sock = _bind(self.config.host, self.config.port)
        self.port = sock.getsockname()[1]
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        self.url = f"http://{host}:{self.port}"
        loop = asyncio.new_event_loop()
        self._loop = loop
        started: threading.Event = threading.Event()
        failure: list[BaseException] = []

        async def boot() -> None:
            self.app = build_app(self.config)
            self._runner = await _start_runner(self.app, sock, access_log=False)

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(boot())
            except BaseException as error:  # re-raised by start()
                failure.append(error)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            # Long-polls and similar stragglers: cancel so the loop closes cleanly.
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(
            target=run, name=f"ollama-simulator-{self.port}", daemon=True
        )
        self._thread.start()
        started.wait()
        if failure:
            sock.close()
            self._thread.join()
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving, cancel in-flight handlers and join the thread."""
        if self._thread is None or self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._runner = None

    def __enter__(self) -> RunningSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        assert self._loop is not None, "simulator is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (see ``GET /_sim/stats``)."""

        async def snapshot() -> dict[str, Any]:
            return self.state.snapshot()

        return self._call(snapshot(), 5)

    def reset(self) -> None:
        """Zero the counters and forget recorded requests and loaded/pulled models."""

        async def reset() -> None:
            self.state.reset()

        self._call(reset(), 5)

    async def _wait(self, targets: dict[str, int], limit: float) -> dict[str, Any]:
        if not await self.state.wait_for(targets, limit):
            raise TimeoutError(
                f"simulator counters never reached {targets}: {self.state.snapshot()}"
            )
        return self.state.snapshot()

    def wait_for(self, *, timeout: float = 5.0, **counters: int) -> dict[str, Any]:
        """Block until the counters reach the values; returns stats or raises TimeoutError.

        Gauges (``in_flight``, ``active``, ``queued``) must be equal; the other
        counters at least the given value.
        """
        return self._call(self._wait(counters, timeout), timeout + 5)

    async def wait_for_async(
        self,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - same signature as wait_for
        **counters: int,
    ) -> dict[str, Any]:
        """:meth:`wait_for` for coroutines running on another event loop."""
        assert self._loop is not None, "simulator is not running"
        future = asyncio.run_coroutine_threadsafe(self._wait(counters, timeout), self._loop)
        return await asyncio.wrap_future(future)


async def _serve_forever(config: SimulatorConfig) -> None:
    sock = _bind(config.host, config.port)
    runner = await _start_runner(build_app(config), sock, access_log=True)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"Simulated Ollama {config.version} listening on http://{shown}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(config: SimulatorConfig) -> None:
    """Serve in the foreground until SIGINT/SIGTERM."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(config))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator options (shared by the CLI and the management command)."""
    defaults = SimulatorConfig()
    parser.add_argument("--host", default=defaults.host, help="bind address (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=defaults.port, help="port, 0 = any free (default %(default)s)"
    )
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=defaults.tokens_per_second,
        help="generation pace, 0 = as fast as possible (default %(default)s)",
    )
    parser.add_argument(
        "--ttft",
        type=float,
        default=defaults.ttft,
        help="seconds before the first byte (default %(default)s)",
    )
    parser.add_argument(
        "--default-tokens",
        type=int,
        default=defaults.default_tokens,
        help="answer length (default %(default)s)",
    )
    parser.add_argument(
        "--max-parallel",
        type=int,
        default=defaults.max_parallel,
        help="generation slots, 0 = unlimited",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="waiting requests before 503 (default %(default)s)",
    )
    parser.add_argument(
        "--ollama-version", default=defaults.version, help="reported by /api/version"
    )
    parser.add_argument(
        "--models", default=None, help="comma-separated installed models (default: all built-in)"
    )


def config_from_options(options: dict[str, Any] | argparse.Namespace) -> SimulatorConfig:
    """Build a config from parsed :func:`add_arguments` options."""
    values = vars(options) if isinstance(options, argparse.Namespace) else options
    models = values.get("models")
    return SimulatorConfig(
        host=values["host"],
        port=values["port"],
        tokens_per_second=values["tokens_per_second"],
        ttft=values["ttft"],
        default_tokens=values["default_tokens"],
        max_parallel=values["max_parallel"],
        max_queue=values["max_queue"],
        version=values["ollama_version"],
        models=tuple(m.strip() for m in models.split(",") if m.strip())
        if models is not None
        else None,
    )


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: ``python -m proxy.simulator --port 11434``."""
    parser = argparse.ArgumentParser(
        prog="python -m proxy.simulator", description="Simulated Ollama server"
    )
    add_arguments(parser)
    config = config_from_options(parser.parse_args(argv))
    try:
        for name in config.models or ():
            SimState.builtin(name)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    serve(config)


if __name__ == "__main__":
    main()
