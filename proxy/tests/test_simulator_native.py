"""The native API (``/``, ``/api/*``) of the simulated Ollama: the official client and raw HTTP.

Runs without Django: ``pytest proxy/tests/test_simulator_native.py -p no:django``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math

import aiohttp
import httpx
import ollama
import pytest

from proxy.simulator import (
    RunningSimulator,
    go_float,
    go_json,
    simulated_text,
)
from proxy.tests.simulator_http import (
    HELLO,
    WEATHER_TOOL,
    ndjson,
    request,
)


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


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/generate", b'{"model":"llama3.2","prompt":"x\\ud800y","stream":false}'),
        ("/api/embed", b'{"model":"all-minilm","input":"x\\ud800y"}'),
    ],
)
def test_it_reads_a_lone_surrogate_as_go_does_as_a_replacement_character(sim, path, body):
    response = httpx.post(f"{sim.url}{path}", content=body)

    assert response.status_code == 200
