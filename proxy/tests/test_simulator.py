"""The simulated Ollama speaks Ollama's wire format closely enough for the real clients.

Runs without Django: ``pytest proxy/tests/test_simulator.py -p no:django``.
Tests never sleep: they wait on the simulator's counters (``wait_for``) instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import math
import socket
import struct
import subprocess
import sys
from pathlib import Path

import aiohttp
import ollama
import openai
import pytest

from proxy.simulator import (
    BUSY_MESSAGE,
    MIDSTREAM_MESSAGE,
    RUNNER_CRASH_MESSAGE,
    RunningSimulator,
    SimulatorConfig,
    go_float,
    go_json,
    simulated_text,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HELLO = [{"role": "user", "content": "Why is the sky blue?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def fast_sim():
    """One unpaced simulator shared by the tests that do not care about timing."""
    with RunningSimulator(tokens_per_second=0, ttft=0) as sim:
        yield sim


@pytest.fixture
def sim(fast_sim):
    fast_sim.reset()
    return fast_sim


def request(
    sim: RunningSimulator,
    method: str,
    path: str,
    body: bytes | str | dict | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 exchange; returns status, lower-cased headers and the decoded body."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    connection = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        payload = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload
    finally:
        connection.close()


def open_stream(
    sim: RunningSimulator, path: str, body: dict, headers: dict[str, str]
) -> socket.socket:
    """Start a request on a bare socket so the test decides when the client leaves."""
    payload = json.dumps(body).encode()
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{sim.port}",
        f"Content-Length: {len(payload)}",
    ]
    head += [f"{name}: {value}" for name, value in headers.items()]
    sock = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}: {data!r}"
        data += chunk
    return data


def ndjson(body: bytes) -> list[dict]:
    assert body.endswith(b"\n")
    return [json.loads(line) for line in body.split(b"\n")[:-1]]


def sse_payloads(body: bytes) -> list[bytes]:
    assert body.endswith(b"\n\n")
    frames = body[:-2].split(b"\n\n")
    assert all(frame.startswith(b"data: ") for frame in frames)
    return [frame[len(b"data: ") :] for frame in frames]


# --------------------------------------------------------------------------
# Official clients
# --------------------------------------------------------------------------


def test_it_answers_generate_through_the_official_ollama_client(sim):
    client = ollama.Client(host=sim.url)

    reply = client.generate(
        model="llama3.2", prompt="Why is the sky blue?", options={"num_predict": 5}
    )
    parts = list(client.generate(model="LLAMA3.2:latest", prompt="Why?", stream=True))

    assert reply.response == simulated_text(5)
    assert (reply.done, reply.done_reason, reply.eval_count) == (True, "length", 5)
    assert reply.prompt_eval_count == 5 + 10
    assert reply.context and reply.total_duration >= reply.load_duration
    assert "".join(p.response for p in parts) == simulated_text(24)
    assert [p.done for p in parts] == [False] * 24 + [True]
    assert parts[-1].done_reason == "stop"
    assert parts[-1].model == "LLAMA3.2:latest"


def test_it_answers_chat_through_the_official_ollama_client(sim):
    client = ollama.Client(host=sim.url)

    reply = client.chat(model="llama3.2", messages=HELLO, options={"num_predict": 3})
    parts = list(client.chat(model="llama3.2", messages=HELLO, stream=True))

    assert reply.message.role == "assistant"
    assert reply.message.content == simulated_text(3)
    assert reply.done_reason == "length"
    assert all(p.message.role == "assistant" for p in parts)
    assert "".join(p.message.content for p in parts) == simulated_text(24)
    final = parts[-1]
    assert (final.done, final.done_reason, final.eval_count) == (True, "stop", 24)
    assert final.prompt_eval_count == 10 + 5 + 4


def test_it_thinks_before_answering_with_a_thinking_model(sim):
    client = ollama.Client(host=sim.url)

    parts = list(
        client.chat(model="qwen3", messages=HELLO, stream=True, options={"num_predict": 2})
    )
    silent = client.chat(model="qwen3", messages=HELLO, think=False, options={"num_predict": 2})

    thinking = [p for p in parts if p.message.thinking]
    assert thinking and parts.index(thinking[-1]) < parts.index(
        next(p for p in parts if p.message.content)
    )
    assert "".join(p.message.content for p in parts) == simulated_text(2)
    assert parts[-1].eval_count == len(thinking) + 2
    assert silent.message.thinking is None and silent.message.content == simulated_text(2)
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="llama3.2", messages=HELLO, think=True)
    assert (raised.value.status_code, raised.value.error) == (
        400,
        '"llama3.2" does not support thinking',
    )


def test_it_calls_a_tool_when_tools_are_offered(sim):
    client = ollama.Client(host=sim.url)

    reply = client.chat(model="llama3.2", messages=HELLO, tools=[WEATHER_TOOL])
    followup = client.chat(
        model="llama3.2",
        messages=[*HELLO, {"role": "tool", "content": "21 degrees", "tool_name": "get_weather"}],
        tools=[WEATHER_TOOL],
        options={"num_predict": 2},
    )

    (call,) = reply.message.tool_calls
    assert call.function.name == "get_weather"
    assert call.function.arguments == {"city": "Paris"}
    assert reply.message.content == ""
    assert followup.message.content == simulated_text(2) and not followup.message.tool_calls
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="llava", messages=HELLO, tools=[WEATHER_TOOL])
    assert raised.value.error == "registry.ollama.ai/library/llava:latest does not support tools"


def test_it_streams_the_tool_call_as_its_own_chunk(sim):
    status, _, body = request(
        sim, "POST", "/api/chat", {"model": "llama3.2", "messages": HELLO, "tools": [WEATHER_TOOL]}
    )

    lines = ndjson(body)
    assert status == 200 and len(lines) == 2
    assert lines[0]["message"]["tool_calls"][0]["function"] == {
        "index": 0,
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    assert lines[0]["message"]["tool_calls"][0]["id"].startswith("call_")
    assert lines[1]["done"] is True and lines[1]["done_reason"] == "stop"


def test_it_accepts_images_for_a_vision_model(sim):
    image = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
    client = ollama.Client(host=sim.url)

    reply = client.chat(
        model="llava", messages=[{"role": "user", "content": "What is this?", "images": [image]}]
    )
    status, _, body = request(
        sim,
        "POST",
        "/api/chat",
        {"model": "llava", "messages": [{"role": "user", "content": "x", "images": ["@@"]}]},
    )

    assert reply.message.content == simulated_text(24)
    assert reply.prompt_eval_count >= 576
    assert status == 400 and json.loads(body)["error"].startswith(
        "illegal base64 data at input byte"
    )


def test_it_embeds_with_deterministic_normalised_vectors(sim):
    client = ollama.Client(host=sim.url)

    first = client.embed(model="all-minilm", input=["hello world", "other"])
    again = client.embed(model="all-minilm", input="hello world")
    small = client.embed(model="all-minilm", input="hello world", dimensions=8)
    legacy = client.embeddings(model="all-minilm", prompt="hello world")

    assert [len(v) for v in first.embeddings] == [384, 384]
    assert first.embeddings[0] == again.embeddings[0] != first.embeddings[1]
    assert all(
        math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-5) for v in first.embeddings
    )
    assert len(small.embeddings[0]) == 8
    assert math.isclose(math.fsum(x * x for x in small.embeddings[0]), 1.0, rel_tol=1e-5)
    assert len(legacy.embedding) == 384
    assert first.prompt_eval_count == (2 + 2) + (1 + 2)


def test_it_lists_shows_and_reports_running_models_through_the_official_client(sim):
    client = ollama.Client(host=sim.url)

    listed = client.list()
    shown = client.show("llama3.2")
    before = client.ps()
    client.generate(model="qwen3", prompt="hi", think=False)
    after = client.ps()

    names = [m.model for m in listed.models]
    assert set(names) == {"llama3.2:latest", "qwen3:latest", "llava:latest", "all-minilm:latest"}
    assert all(len(m.digest) == 64 for m in listed.models)
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.capabilities == ["completion", "tools"]
    assert shown.details.parameter_size == "3.2B"
    assert before.models == []
    assert [m.model for m in after.models] == ["qwen3:latest"]


def test_it_raises_a_404_response_error_for_a_missing_model(sim):
    client = ollama.Client(host=sim.url)

    with pytest.raises(ollama.ResponseError) as generate:
        client.generate(model="missing", prompt="hi")
    with pytest.raises(ollama.ResponseError) as chat:
        list(client.chat(model="missing", messages=HELLO, stream=True))
    with pytest.raises(ollama.ResponseError) as embed:
        client.embed(model="missing", input="x")

    assert (generate.value.status_code, generate.value.error) == (404, "model 'missing' not found")
    assert (chat.value.status_code, chat.value.error) == (404, "model 'missing' not found")
    assert embed.value.error == 'model "missing" not found, try pulling it first'


def test_it_serves_the_openai_sdk_chat_stream_with_usage(sim):
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="ollama", max_retries=0)

    chunks = list(
        client.chat.completions.create(
            model="llama3.2",
            messages=HELLO,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == simulated_text(4)
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.completion_tokens, chunks[-1].usage.prompt_tokens) == (4, 19)
    assert len({c.id for c in chunks}) == 1


def test_it_serves_openai_chat_completions_and_embeddings_and_models(sim):
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="ollama", max_retries=0)

    chat = client.chat.completions.create(model="llama3.2", messages=HELLO, max_tokens=3)
    tool = client.chat.completions.create(model="llama3.2", messages=HELLO, tools=[WEATHER_TOOL])
    reasoning = client.chat.completions.create(model="qwen3", messages=HELLO, max_tokens=2)
    completion = client.completions.create(model="llama3.2", prompt="Once", max_tokens=5)
    embedded = client.embeddings.create(model="all-minilm", input=["a", "b"])
    as_floats = client.embeddings.create(model="all-minilm", input="a", encoding_format="float")
    models = client.models.list()
    one = client.models.retrieve("llama3.2")

    assert chat.choices[0].message.content == simulated_text(3)
    assert chat.choices[0].finish_reason == "length" and chat.usage.completion_tokens == 3
    assert chat.id.startswith("chatcmpl-") and chat.system_fingerprint == "fp_ollama"
    assert tool.choices[0].finish_reason == "tool_calls"
    assert json.loads(tool.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert reasoning.choices[0].message.reasoning.startswith("Okay,")
    assert completion.choices[0].text == simulated_text(5)
    assert [len(e.embedding) for e in embedded.data] == [384, 384]
    assert embedded.data[0].embedding == pytest.approx(as_floats.data[0].embedding)
    assert {m.id for m in models.data} >= {"llama3.2:latest", "all-minilm:latest"}
    assert (one.id, one.owned_by) == ("llama3.2", "library")
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="missing", messages=HELLO)
    assert raised.value.body["message"] == "model 'missing' not found"


# --------------------------------------------------------------------------
# Exact bytes
# --------------------------------------------------------------------------


def test_it_writes_native_bodies_compact_with_no_trailing_newline(sim):
    status, headers, body = request(
        sim, "POST", "/api/generate", {"model": "llama3.2", "prompt": "hi", "stream": False}
    )

    assert status == 200
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert int(headers["content-length"]) == len(body)
    assert "server" not in headers
    assert body.startswith(b'{"model":"llama3.2","created_at":"') and body.endswith(b"}")
    assert body == go_json(json.loads(body))  # compact, Go escaping, same field order
    created_at = json.loads(body)["created_at"]
    assert created_at.endswith("Z") and not created_at[:-1].endswith("0")
    keys = list(json.loads(body))
    assert keys[:6] == ["model", "created_at", "response", "done", "done_reason", "context"]
    assert keys[6:] == [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ]


def test_it_escapes_html_characters_and_keeps_unicode_raw_like_go(sim):
    text = "<think>é & 日本</think>"
    _, _, body = request(
        sim,
        "POST",
        "/api/generate",
        {"model": "llama3.2", "prompt": "hi", "stream": False},
        {"X-Sim-Text": "%3Cthink%3E%C3%A9%20%26%20%E6%97%A5%E6%9C%AC%3C%2Fthink%3E"},
    )

    assert b'"response":"\\u003cthink\\u003e' in body
    assert "é \\u0026 日本\\u003c/think\\u003e".encode() in body
    assert json.loads(body)["response"] == text
    assert go_json({"a": "<&>\u2028"}) == b'{"a":"\\u003c\\u0026\\u003e\\u2028"}'
    assert (go_float(1e-05, 32), go_float(1e-07, 64), go_float(500000.0, 32)) == (
        "0.00001",
        "1e-7",
        "500000",
    )


def test_it_uses_the_exact_content_types_of_ollama(sim):
    chat = {"model": "llama3.2", "messages": HELLO}
    cases = [
        ("GET", "/", None, "text/plain; charset=utf-8"),
        ("GET", "/api/version", None, "application/json; charset=utf-8"),
        ("GET", "/api/tags", None, "application/json; charset=utf-8"),
        ("POST", "/api/chat", chat, "application/x-ndjson"),
        (
            "POST",
            "/api/chat",
            {"model": "llama3.2", "messages": []},
            "application/json; charset=utf-8",
        ),
        ("POST", "/api/pull", {"model": "llama3.2", "stream": False}, "application/json"),
        ("POST", "/v1/chat/completions", chat, "application/json"),
        ("POST", "/v1/chat/completions", {**chat, "stream": True}, "text/event-stream"),
        ("GET", "/v1/models", None, "application/json"),
        ("GET", "/nope", None, "text/plain"),
    ]

    for method, path, body, content_type in cases:
        _, headers, _ = request(sim, method, path, body)
        assert headers["content-type"] == content_type, (method, path)


def test_it_streams_chunked_ndjson_one_line_per_write(sim):
    async def chunks() -> tuple[dict, list[bytes]]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{sim.url}/api/generate", json={"model": "llama3.2", "prompt": "hi"}
            ) as response,
        ):
            parts = [data async for data, _ in response.content.iter_chunks() if data]
            return dict(response.headers), parts

    headers, parts = asyncio.run(chunks())

    assert headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in headers
    assert all(part.endswith(b"\n") and part.count(b"\n") == 1 for part in parts)
    assert len(parts) == 25


def test_it_ends_openai_streams_with_done_and_keeps_openai_bodies_newline_terminated(sim):
    chat = {"model": "llama3.2", "messages": HELLO, "max_tokens": 2}
    _, _, plain = request(sim, "POST", "/v1/chat/completions", chat)
    _, _, streamed = request(sim, "POST", "/v1/chat/completions", {**chat, "stream": True})
    _, _, completions = request(
        sim,
        "POST",
        "/v1/completions",
        {
            "model": "llama3.2",
            "prompt": "hi",
            "max_tokens": 1,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )

    assert plain.endswith(b"}\n") and plain.count(b"\n") == 1
    payloads = sse_payloads(streamed)
    assert payloads[-1] == b"[DONE]"
    assert json.loads(payloads[-2])["choices"] == [
        {"index": 0, "delta": {}, "finish_reason": "length"}
    ]
    assert all("usage" not in json.loads(p) for p in payloads[:-1])
    first = json.loads(completions.split(b"\n\n")[0][len(b"data: ") :])
    assert list(first) == [
        "id",
        "object",
        "created",
        "choices",
        "model",
        "system_fingerprint",
        "usage",
    ]
    assert first["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    last = json.loads(sse_payloads(completions)[-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 1


def test_it_answers_unknown_paths_and_wrong_methods_like_gin(sim):
    missing = request(sim, "GET", "/api/nope")
    wrong = request(sim, "GET", "/api/show")
    post_tags = request(sim, "POST", "/api/tags", b"")
    head = request(sim, "HEAD", "/")
    preflight = request(sim, "OPTIONS", "/api/chat")

    assert (missing[0], missing[2]) == (404, b"404 page not found")
    assert (wrong[0], wrong[2], wrong[1]["allow"]) == (405, b"405 method not allowed", "POST")
    assert (post_tags[0], post_tags[1]["allow"]) == (405, "HEAD, GET")
    assert (head[0], head[2], head[1]["content-length"]) == (200, b"", "17")
    assert preflight[0] == 204


def test_it_decodes_requests_like_go_and_reports_its_errors(sim):
    def error(path: str, body: bytes | str | dict) -> tuple[int, str]:
        status, _, payload = request(sim, "POST", path, body, {"Content-Type": "text/plain"})
        return status, json.loads(payload)["error"]

    assert error("/api/generate", b"") == (400, "missing request body")
    assert error("/api/chat", b"{") == (400, "unexpected EOF")
    assert error("/api/chat", b"{]") == (
        400,
        "invalid character ']' looking for beginning of object key string",
    )
    assert error("/api/generate", {"model": 3}) == (
        400,
        "json: cannot unmarshal number into Go struct field GenerateRequest.model of type string",
    )
    assert error("/api/generate", {"model": "", "prompt": "x"}) == (404, "model '' not found")
    assert error("/api/chat", {"model": "", "messages": HELLO}) == (400, "model is required")
    assert error("/api/chat", {"model": "all-minilm", "messages": HELLO}) == (
        400,
        '"all-minilm" does not support chat',
    )
    assert error("/api/generate", {"model": "all-minilm", "prompt": "x"}) == (
        400,
        '"all-minilm" does not support generate',
    )
    assert error("/api/embed", {"model": "all-minilm", "input": [1]}) == (400, "invalid input type")
    assert error("/api/show", {}) == (400, "model is required")
    # A request that would work still works with a form Content-Type, like curl -d.
    assert (
        request(
            sim,
            "POST",
            "/api/show",
            '{"Model":"llama3.2"}',
            {"Content-Type": "x-www-form-urlencoded"},
        )[0]
        == 200
    )


def test_it_reports_openai_errors_in_openai_shape(sim):
    status, headers, body = request(
        sim, "POST", "/v1/chat/completions", {"model": "llama3.2", "messages": []}
    )
    missing = request(sim, "GET", "/v1/models/nope:1b")

    assert status == 400 and headers["content-type"] == "application/json"
    assert body == (
        b'{"error":{"message":"[] is too short - \'messages\'","type":"invalid_request_error",'
        b'"param":null,"code":null}}\n'
    )
    assert missing[0] == 404 and json.loads(missing[2])["error"]["type"] == "not_found_error"


def test_it_answers_load_and_unload_requests_with_a_single_json_object(sim):
    _, headers, load = request(sim, "POST", "/api/generate", {"model": "llama3.2"})
    _, _, unload = request(
        sim, "POST", "/api/chat", {"model": "llama3.2", "messages": [], "keep_alive": 0}
    )

    assert headers["content-type"] == "application/json; charset=utf-8"
    assert not load.endswith(b"\n")
    assert json.loads(load)["done_reason"] == "load" and json.loads(load)["response"] == ""
    assert json.loads(unload)["done_reason"] == "unload"
    assert json.loads(unload)["message"] == {"role": "assistant", "content": ""}
    assert json.loads(request(sim, "GET", "/api/ps")[2]) == {"models": []}


def test_it_pulls_known_models_and_fails_unknown_ones_after_the_manifest(fast_sim):
    with RunningSimulator(tokens_per_second=0, ttft=0, models=()) as empty:
        assert json.loads(request(empty, "GET", "/api/tags")[2]) == {"models": []}
        assert request(empty, "GET", "/v1/models")[2] == b'{"object":"list","data":null}\n'

        statuses = [p.status for p in ollama.Client(host=empty.url).pull("llama3.2", stream=True)]
        _, _, unknown = request(empty, "POST", "/api/pull", {"model": "nope"})
        quiet = request(empty, "POST", "/api/pull", {"model": "nope", "stream": False})

        assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
        assert "pulling dde5aa3fc5ff" in statuses and "verifying sha256 digest" in statuses
        assert ndjson(unknown) == [
            {"status": "pulling manifest"},
            {"error": "pull model manifest: file does not exist"},
        ]
        assert (quiet[0], quiet[1]["content-type"]) == (500, "application/json")
        assert [m.model for m in ollama.Client(host=empty.url).list().models] == ["llama3.2:latest"]


# --------------------------------------------------------------------------
# Knobs
# --------------------------------------------------------------------------


def test_it_reports_a_midstream_failure_as_a_last_error_line(sim):
    client = ollama.Client(host=sim.url, headers={"X-Sim-Fail": "midstream"})
    received = []

    with pytest.raises(ollama.ResponseError) as raised:
        for part in client.chat(model="llama3.2", messages=HELLO, stream=True):
            received.append(part.message.content)
    status, _, body = request(
        sim,
        "POST",
        "/api/generate",
        {"model": "llama3.2", "prompt": "hi"},
        {"X-Sim-Fail": "midstream"},
    )

    assert raised.value.error == MIDSTREAM_MESSAGE
    assert received == ["The", " sky"]
    assert status == 200 and ndjson(body)[-1] == {"error": MIDSTREAM_MESSAGE}


def test_it_fails_before_the_first_byte_when_asked_for_a_500(sim):
    status, headers, body = request(
        sim, "POST", "/api/generate", {"model": "llama3.2", "prompt": "hi"}, {"X-Sim-Fail": "500"}
    )
    limited = request(
        sim, "POST", "/api/chat", {"model": "llama3.2", "messages": HELLO}, {"X-Sim-Fail": "429"}
    )

    assert (status, body) == (500, go_json({"error": RUNNER_CRASH_MESSAGE}))
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert (limited[0], limited[1]["content-type"], limited[2]) == (
        429,
        "application/json",
        b'{"error":"rate limit exceeded"}',
    )


def test_it_splits_a_utf8_character_across_two_writes_when_asked(sim):
    async def chunks() -> list[bytes]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{sim.url}/api/generate",
                json={"model": "llama3.2", "prompt": "hi"},
                headers={"X-Sim-Split-UTF8": "1", "X-Sim-Tokens": "4"},
            ) as response,
        ):
            return [data async for data, _ in response.content.iter_chunks() if data]

    parts = asyncio.run(chunks())

    # Each content line arrives as two chunks, neither valid UTF-8 on its own;
    # the final line is plain ASCII and comes whole.
    assert len(parts) == 4 * 2 + 1
    assert not any(_decodes(part) for part in parts[:-1]) and _decodes(parts[-1])
    lines = ndjson(b"".join(parts))
    assert "".join(line["response"] for line in lines) == "héllo wörld 日本語 🌍"


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_it_answers_with_the_given_text_and_token_count(sim):
    _, _, text = request(
        sim,
        "POST",
        "/api/generate",
        {"model": "llama3.2", "prompt": "hi", "stream": False},
        {"X-Sim-Text": "Hello%2C%20%20world%0A!"},
    )
    _, _, counted = request(
        sim,
        "POST",
        "/api/generate",
        {"model": "llama3.2", "prompt": "hi", "stream": False},
        {"X-Sim-Tokens": "40"},
    )

    assert json.loads(text)["response"] == "Hello,  world\n!"
    assert json.loads(text)["eval_count"] == 3
    assert json.loads(counted)["response"] == simulated_text(40)
    assert json.loads(counted)["done_reason"] == "stop"


def test_it_paces_tokens_and_reports_durations_that_match(fast_sim):
    with RunningSimulator(tokens_per_second=100, ttft=0.05) as paced:
        reply = ollama.Client(host=paced.url).generate(
            model="llama3.2", prompt="hi", options={"num_predict": 10}
        )

    assert 0.05e9 <= reply.load_duration < 0.5e9
    assert 0.09e9 <= reply.eval_duration < 0.6e9
    assert reply.total_duration >= reply.load_duration + reply.eval_duration


# --------------------------------------------------------------------------
# Disconnects, concurrency and observability
# --------------------------------------------------------------------------


def test_it_counts_a_disconnect_and_stops_generating_when_the_client_leaves(sim):
    sock = open_stream(
        sim,
        "/api/generate",
        {"model": "llama3.2", "prompt": "hi"},
        {"X-Sim-TPS": "20", "X-Sim-Tokens": "400"},
    )
    read_until(sock, b"\n{")
    sock.close()

    stats = sim.wait_for(disconnects=1, in_flight=0, active=0)

    assert stats["completed"] == 0
    assert stats["generated_tokens"] < 400
    assert stats["last_response"].startswith(b'{"model":"llama3.2"')


def test_it_counts_a_disconnect_while_the_model_is_still_loading(sim):
    sock = open_stream(
        sim, "/api/chat", {"model": "llama3.2", "messages": HELLO}, {"X-Sim-TTFT": "30"}
    )
    sim.wait_for(active=1)

    sock.close()

    assert sim.wait_for(disconnects=1, in_flight=0)["generated_tokens"] == 0


def test_it_drops_the_connection_mid_stream_when_asked(sim):
    sock = open_stream(
        sim, "/api/generate", {"model": "llama3.2", "prompt": "hi"}, {"X-Sim-Fail": "drop"}
    )
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    sock.close()

    stats = sim.wait_for(dropped=1, in_flight=0)

    assert received.count(b'"done":false') == 2
    assert not received.endswith(b"0\r\n\r\n")  # the chunked body never ends
    assert (stats["disconnects"], stats["completed"]) == (0, 0)


def test_it_makes_any_route_slow_with_the_ttft_knob(sim):
    sock = open_stream(sim, "/api/show", {"model": "llama3.2"}, {"X-Sim-TTFT": "30"})
    sim.wait_for(requests=1)

    sock.close()

    assert sim.wait_for(disconnects=1, in_flight=0)["completed"] == 0


def test_it_queues_then_rejects_with_503_when_the_server_is_busy(fast_sim):
    slow = {"X-Sim-TPS": "20", "X-Sim-Tokens": "400"}
    body = {"model": "llama3.2", "prompt": "hi"}
    with RunningSimulator(tokens_per_second=0, ttft=0, max_parallel=1, max_queue=1) as busy:
        first = open_stream(busy, "/api/generate", body, slow)
        busy.wait_for(active=1)
        queued = open_stream(busy, "/api/generate", {**body, "stream": False}, {})
        busy.wait_for(queued=1)

        status, headers, rejected = request(busy, "POST", "/api/generate", body)
        first.close()
        answer = read_until(queued, b'"done":true')

        assert (status, rejected) == (503, go_json({"error": BUSY_MESSAGE}))
        assert headers["content-type"] == "application/json; charset=utf-8"
        assert b"HTTP/1.1 200 OK" in answer
        stats = busy.wait_for(disconnects=1, completed=2, rejected=1)
        queued.close()
        assert stats["requests"] == 3


def test_it_exposes_stats_reset_and_long_polling_over_http(sim):
    request(sim, "POST", "/api/show", {"model": "llama3.2"}, {"X-Trace": "abc"})

    stats = json.loads(request(sim, "GET", "/_sim/wait?completed=1&timeout=5")[2])
    timeout_status, _, _ = request(sim, "GET", "/_sim/wait?completed=5&timeout=0.05")
    recent = json.loads(request(sim, "GET", "/_sim/requests")[2])
    reset = json.loads(request(sim, "POST", "/_sim/reset")[2])

    assert stats["requests"] == stats["completed"] == 1
    seen = stats["last_request"]
    assert (seen["method"], seen["path"], seen["headers"]["x-trace"]) == (
        "POST",
        "/api/show",
        "abc",
    )
    assert json.loads(seen["body"]) == {"model": "llama3.2"} and seen["body_length"] == 21
    assert stats["last_response_encoding"] == "utf-8"
    assert timeout_status == 408
    assert [r["path"] for r in recent] == ["/api/show"]
    assert (reset["requests"], reset["last_request"]) == (0, None)
    with pytest.raises(TimeoutError):
        sim.wait_for(requests=1, timeout=0.05)


def test_it_records_the_exact_bytes_it_sent(sim):
    _, _, body = request(sim, "POST", "/api/chat", {"model": "llama3.2", "messages": HELLO})
    streamed = sim.stats()["last_response"]
    _, _, tags = request(sim, "GET", "/api/tags")

    assert streamed == body
    assert sim.stats()["last_response"] == tags
    assert sim.stats()["last_response_status"] == 200


def test_it_runs_from_the_command_line(tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.simulator",
            "--port",
            "0",
            "--tokens-per-second",
            "0",
            "--ollama-version",
            "9.9.9",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner = process.stdout.readline()
        url = banner.rsplit(" ", 1)[-1].strip()
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", "/api/version")
        assert connection.getresponse().read() == b'{"version":"9.9.9"}'
        connection.close()
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_it_keeps_the_config_defaults_documented_in_the_api():
    config = SimulatorConfig()

    assert (config.host, config.port, config.tokens_per_second, config.ttft) == (
        "127.0.0.1",
        11434,
        50.0,
        0.05,
    )
    assert (config.default_tokens, config.max_parallel, config.max_queue, config.version) == (
        24,
        0,
        512,
        "0.33.0",
    )


def test_it_encodes_base64_embeddings_as_little_endian_float32(sim):
    _, _, floats = request(
        sim,
        "POST",
        "/v1/embeddings",
        {"model": "all-minilm", "input": "x", "encoding_format": "float"},
    )
    _, _, packed = request(
        sim,
        "POST",
        "/v1/embeddings",
        {"model": "all-minilm", "input": "x", "encoding_format": "base64"},
    )

    vector = json.loads(floats)["data"][0]["embedding"]
    raw = base64.b64decode(json.loads(packed)["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(vector, rel=1e-6)
    assert request(sim, "POST", "/v1/embeddings", {"model": "all-minilm", "input": []})[0] == 400
