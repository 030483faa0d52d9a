"""The OpenAI-compatible API (``/v1/*``) of the simulated Ollama: the OpenAI SDK and raw HTTP.

Runs without Django: ``pytest proxy/tests/test_simulator_openai.py -p no:django``.
"""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest

from proxy.simulator import (
    simulated_text,
)
from proxy.tests.simulator_http import (
    HELLO,
    WEATHER_TOOL,
    request,
    sse_payloads,
)


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
