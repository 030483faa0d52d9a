"""Ollama-native requests for an OpenAI-compatible backend, and its replies back as Ollama's.

Unit tests on hand-written OpenAI bytes split anywhere, then real exchanges with the simulated
Ollama's own `/v1` routes over loopback, compared with what its native routes answer.
"""

from __future__ import annotations

import base64
import json
import re

import httpx
import ollama as ollama_client
import orjson
import pytest

from proxy import ollama, translate
from proxy.simulator import simulated_text
from proxy.tests.simulator_http import HELLO, WEATHER_TOOL
from proxy.translate import ResponseTranslator, TranslationError, translate_request

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(40))).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(40)).decode()
RFC3339_NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z")


def request_of(path: str, native: dict) -> tuple[str, dict]:
    openai_path, body = translate_request(path, json.dumps(native).encode())
    return openai_path, json.loads(body)


def lines_of(output: bytes) -> list[dict]:
    assert output.endswith(b"\n") and b"\n\n" not in output
    return [json.loads(line) for line in output.split(b"\n")[:-1]]


def translate_all(path: str, stream: bool, pieces: list[bytes], model="gpt-4o") -> bytes:
    translator = ResponseTranslator(path, stream, model)
    return b"".join(translator.feed(piece) for piece in pieces) + translator.finish()


def without_clock(objects: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in obj.items() if k != "created_at" and not k.endswith("_duration")}
        for obj in objects
    ]


# --- Requests -------------------------------------------------------------------------------


def test_it_translates_a_chat_with_options_format_images_tools_and_thinking():
    native = {
        "model": "gpt-4o",
        "messages": [
            {"role": "System", "content": "Be brief."},
            {"role": "user", "content": "What is in these?", "images": [PNG, JPEG]},
        ],
        "options": {
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 7,
            "stop": ["\n\n"],
            "num_predict": 64,
            "frequency_penalty": 0.5,
            "presence_penalty": 0.1,
            "num_ctx": 8192,
            "top_k": 20,
        },
        "format": {"type": "object", "properties": {"answer": {"type": "string"}}},
        "tools": [WEATHER_TOOL],
        "think": "max",
        "keep_alive": "5m",
    }

    path, request = request_of("/api/chat", native)

    assert path == "/v1/chat/completions"
    assert request == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}"}},
                ],
            },
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.1,
        "seed": 7,
        "max_tokens": 64,
        "stop": ["\n\n"],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": native["format"]},
        },
        "tools": [WEATHER_TOOL],
        "reasoning_effort": "high",
    }


def test_it_sends_no_stream_options_without_a_stream_and_leaves_out_ollama_defaults():
    native = {
        "model": "gpt-4o",
        "messages": HELLO,
        "stream": False,
        "tools": [],
        "think": True,
        "format": "json",
        "options": {"seed": -1, "num_predict": -1, "stop": "END"},
    }

    _, request = request_of("/api/chat", native)

    assert request == {
        "model": "gpt-4o",
        "messages": HELLO,
        "stream": False,
        "stop": ["END"],
        "response_format": {"type": "json_object"},
    }


def test_it_gives_native_tool_calls_ids_and_links_the_tool_results_to_them():
    native = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "Weather and time in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "get_time", "arguments": {"city": "Paris"}}},
                ],
            },
            {"role": "tool", "content": "12:00", "tool_name": "get_time"},
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "call_x", "function": {"name": "get_time", "arguments": {}}},
                ],
            },
            {"role": "tool", "content": "12:01"},
        ],
    }

    _, request = request_of("/api/chat", native)

    messages = request["messages"]
    assert messages[1]["tool_calls"] == [
        {
            "id": "call_1_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
        {
            "id": "call_1_1",
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"city":"Paris"}'},
        },
    ]
    assert [m.get("tool_call_id") for m in messages[2:4]] == ["call_1_1", "call_1_0"]
    assert messages[4]["tool_calls"][0]["id"] == "call_x"
    assert messages[5] == {"role": "tool", "content": "12:01", "tool_call_id": "call_x"}


def test_it_turns_generates_prompt_and_system_into_chat_messages():
    native = {
        "model": "gpt-4o",
        "prompt": "Describe it.",
        "system": "You are terse.",
        "images": [PNG],
        "think": "low",
        "stream": False,
    }

    path, request = request_of("/api/generate", native)

    assert path == "/v1/chat/completions"
    assert request == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe it."},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
        ],
        "stream": False,
        "reasoning_effort": "low",
    }


def test_it_translates_embed_and_the_legacy_embeddings():
    embed = request_of("/api/embed", {"model": "e", "input": ["a", "b"], "dimensions": 8})
    single = request_of("/api/embed", {"model": "e", "input": "a", "truncate": False})
    legacy = request_of("/api/embeddings", {"model": "e", "prompt": "a"})

    assert embed == (
        "/v1/embeddings",
        {"model": "e", "input": ["a", "b"], "encoding_format": "float", "dimensions": 8},
    )
    assert single == ("/v1/embeddings", {"model": "e", "input": "a", "encoding_format": "float"})
    assert legacy == single


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/api/chat", b"{", "request body is not JSON"),
        ("/api/chat", b"[]", "request body is not a JSON object"),
        ("/api/chat", b'{"messages":[]}', "model is required"),
        ("/api/chat", b'{"model":"m","messages":[]}', "messages are required"),
        ("/api/chat", b'{"model":"m","messages":HELLO,"think":"huge"}', "invalid think value"),
        ("/api/chat", b'{"model":"m","messages":[{"role":"user","content":3}]}', "not a string"),
        ("/api/chat", b'{"model":"m","messages":HELLO,"format":3}', "invalid format"),
        ("/api/chat", b'{"model":"m","messages":HELLO,"tools":["t"]}', "a tool must be"),
        (
            "/api/chat",
            b'{"model":"m","messages":[{"role":"assistant","tool_calls":[{}]}]}',
            "tool call 0 of message 0 has no function name",
        ),
        ("/api/generate", b'{"model":"m","prompt":"","stream":false}', "prompt is required"),
        ("/api/generate", b'{"model":"m","prompt":"a","suffix":"b"}', "suffix"),
        ("/api/generate", b'{"model":"m","prompt":"a","images":["aGVsbG8gd29ybGQh"]}', "PNG"),
        ("/api/generate", b'{"model":"m","prompt":"a","images":["!!"]}', "not valid base64"),
        ("/api/embed", b'{"model":"m","input":["a",1]}', "invalid input type"),
        ("/api/embed", b'{"model":"m","input":[]}', "input is required"),
        ("/api/embeddings", b'{"model":"m","prompt":""}', "prompt is required"),
        ("/api/show", b'{"model":"m"}', "/api/show has no OpenAI-compatible counterpart"),
    ],
)
def test_it_refuses_what_it_cannot_translate(path, body, message):
    body = body.replace(b"HELLO", json.dumps(HELLO).encode())
    with pytest.raises(TranslationError, match=re.escape(message)):
        translate_request(path, body)


# --- Replies, unit ----------------------------------------------------------------------------


def sse(*events: dict | str, newline: bytes = b"\n") -> bytes:
    frames = [e if isinstance(e, str) else json.dumps(e, ensure_ascii=False) for e in events]
    return b"".join(b"data: " + f.encode() + newline + newline for f in frames)


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None):
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    event = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": choices}
    if usage is not None:
        event["usage"] = usage
    return event


USAGE = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
# Thinking, text with multi-byte characters, a tool call whose arguments arrive in pieces.
CHAT_STREAM = b": keep-alive\n\n" + sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "Hmm, "}),
    chunk({"reasoning_content": "the city…"}),
    chunk({"content": "Café "}),
    chunk({"content": "in 東京 🙂"}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "T'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ōkyō"}'}}]}),
    chunk({}, finish="tool_calls"),
    chunk(None, usage=USAGE),
    "[DONE]",
)


def test_a_streamed_chat_becomes_ollama_lines_that_the_client_and_the_recorder_read():
    output = translate_all("/api/chat", True, [CHAT_STREAM])

    lines = output.split(b"\n")[:-1]
    parts = [ollama_client.ChatResponse.model_validate_json(line) for line in lines]
    assert [p.message.thinking for p in parts[:2]] == ["Hmm, ", "the city…"]
    assert [p.message.content for p in parts[2:4]] == ["Café ", "in 東京 🙂"]
    call = parts[4].message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("get_weather", {"city": "Tōkyō"})
    assert not parts[4].done and parts[5].done and parts[5].done_reason == "stop"
    assert (parts[5].prompt_eval_count, parts[5].eval_count) == (21, 9)
    assert all(p.model == "gpt-4o" and RFC3339_NANO.fullmatch(p.created_at) for p in parts)
    assert list(json.loads(lines[-1])) == [
        "model",
        "created_at",
        "message",
        "done",
        "done_reason",
        "total_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ]
    info = ollama.parse_response("/api/chat", "application/x-ndjson", output)
    assert (info.text, info.thinking) == ("Café in 東京 🙂", "Hmm, the city…")
    assert info.tool_calls == [
        {
            "id": "call_abc",
            "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tōkyō"}},
        }
    ]
    assert (info.input_tokens, info.output_tokens, info.done_reason) == (21, 9, "stop")
    assert info.total_duration_seconds > 0 and info.eval_duration_seconds > 0


def test_a_stream_split_at_any_byte_or_sent_with_crlf_translates_the_same():
    whole = without_clock(lines_of(translate_all("/api/chat", True, [CHAT_STREAM])))
    crlf = CHAT_STREAM.replace(b"\n", b"\r\n")

    for cut in range(1, len(CHAT_STREAM)):
        pieces = [CHAT_STREAM[:cut], CHAT_STREAM[cut:]]
        assert without_clock(lines_of(translate_all("/api/chat", True, pieces))) == whole, cut
    bytewise = [crlf[i : i + 1] for i in range(len(crlf))]
    assert without_clock(lines_of(translate_all("/api/chat", True, bytewise))) == whole


def test_a_streamed_generate_gives_response_lines_and_keeps_length_as_done_reason():
    stream = sse(
        chunk({"role": "assistant", "content": "Once"}),
        chunk({"content": " upon"}),
        chunk({}, finish="length"),
        chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
    )  # no [DONE]: the stream's end is enough

    objects = lines_of(translate_all("/api/generate", True, [stream], model="m"))

    for obj in objects:
        ollama_client.GenerateResponse.model_validate(obj)
    assert without_clock(objects) == [
        {"model": "m", "response": "Once", "done": False},
        {"model": "m", "response": " upon", "done": False},
        {
            "model": "m",
            "response": "",
            "done": True,
            "done_reason": "length",
            "prompt_eval_count": 5,
            "eval_count": 2,
        },
    ]


def test_durations_count_from_the_request_to_the_first_token_and_to_the_end(monkeypatch):
    clock = iter([5_000_000_000, 5_300_000_000, 5_800_000_000])
    monkeypatch.setattr(translate, "perf_counter_ns", lambda: next(clock))
    translator = ResponseTranslator("/api/chat", True, "m")

    translator.feed(sse(chunk({"role": "assistant", "content": ""})))
    translator.feed(sse(chunk({"content": "Hi"}), chunk({}, finish="stop")))
    final = json.loads(translator.finish())

    assert (final["total_duration"], final["prompt_eval_duration"]) == (800_000_000, 300_000_000)
    assert final["eval_duration"] == 500_000_000
    assert "load_duration" not in final
    assert "prompt_eval_count" not in final  # the backend sent no usage


def test_a_mid_stream_error_ends_the_stream_with_an_ollama_error_line():
    translator = ResponseTranslator("/api/chat", True, "m")
    head = translator.feed(sse(chunk({"content": "Hi"})))
    failed = translator.feed(
        b'data: {"error":{"message":"upstream overloaded","type":"server_error"}}\n\n'
        + sse(chunk({"content": " there"}))
    )

    assert failed == b'{"error":"upstream overloaded"}\n'
    assert translator.feed(sse(chunk({"content": "!"}))) == b""
    assert translator.finish() == b""
    info = ollama.parse_response("/api/chat", "application/x-ndjson", head + failed)
    assert (info.text, info.error, info.done) == ("Hi", "upstream overloaded", False)


def test_unreadable_events_and_tool_arguments_that_are_no_object_become_error_lines():
    garbled = translate_all("/api/chat", True, [b"data: {oops\n\n"])
    bad_arguments = translate_all(
        "/api/chat",
        True,
        [
            sse(
                chunk(
                    {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "[1]"}}]}
                ),
                chunk({}, finish="tool_calls"),
            )
        ],
    )

    assert json.loads(garbled)["error"].startswith("unreadable event from the backend")
    assert json.loads(bad_arguments) == {
        "error": "the backend sent tool call arguments that are not an object: f"
    }


def test_a_whole_chat_reply_becomes_one_ollama_object_without_a_newline():
    reply = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "",
                    "reasoning_content": "Need the weather.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
    }
    body = json.dumps(reply).encode() + b"\n"
    translator = ResponseTranslator("/api/chat", False, "gpt-4o")

    assert translator.content_type == "application/json; charset=utf-8"
    output = b"".join(translator.feed(body[i : i + 7]) for i in range(0, len(body), 7))
    output += translator.finish()

    assert not output.endswith(b"\n")
    parsed = ollama_client.ChatResponse.model_validate_json(output)
    assert parsed.message.thinking == "Need the weather."
    assert parsed.message.tool_calls[0].function.arguments == {"city": "Oslo"}
    assert (parsed.done, parsed.done_reason, parsed.eval_count) == (True, "stop", 12)
    assert list(json.loads(output)) == [
        "model",
        "created_at",
        "message",
        "done",
        "done_reason",
        "total_duration",
        "prompt_eval_count",
        "eval_count",
    ]


LOGPROBS = [
    {
        "token": "Hi",
        "logprob": -0.25,
        "bytes": [72, 105],
        "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}],
    }
]


def test_log_probabilities_are_asked_for_and_come_back_where_ollama_puts_them():
    _, request = request_of(
        "/api/chat", {"model": "m", "messages": HELLO, "logprobs": True, "top_logprobs": 1}
    )
    streamed = translate_all(
        "/api/chat",
        True,
        [
            sse(
                {
                    "choices": [
                        {"index": 0, "delta": {"content": "Hi"}, "logprobs": {"content": LOGPROBS}}
                    ]
                }
            )
        ],
    )
    whole_reply = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi"},
                "logprobs": {"content": LOGPROBS},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
    chat = json.loads(translate_all("/api/chat", False, [orjson.dumps(whole_reply)]))
    generated = json.loads(translate_all("/api/generate", False, [orjson.dumps(whole_reply)]))

    assert (request["logprobs"], request["top_logprobs"]) == (True, 1)
    line = ollama_client.ChatResponse.model_validate_json(streamed.split(b"\n")[0])
    assert line.logprobs[0].top_logprobs[0].token == "Hi"
    assert list(chat)[3:6] == ["done", "done_reason", "logprobs"]
    assert list(generated)[-1] == "logprobs" and generated["logprobs"] == LOGPROBS
    assert ollama_client.GenerateResponse.model_validate(generated).logprobs[0].logprob == -0.25


def test_whole_embedding_replies_become_embed_and_legacy_embeddings_objects():
    reply = orjson.dumps(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "embedding": [0.3, 0.4], "index": 1},
                {"object": "embedding", "embedding": [0.1, 0.2], "index": 0},
            ],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
    )

    embed = json.loads(translate_all("/api/embed", False, [reply[:30], reply[30:]], "e"))
    legacy = json.loads(translate_all("/api/embeddings", False, [reply], "e"))

    ollama_client.EmbedResponse.model_validate(embed)
    assert list(embed) == ["model", "embeddings", "total_duration", "prompt_eval_count"]
    assert (embed["model"], embed["embeddings"]) == ("e", [[0.1, 0.2], [0.3, 0.4]])
    assert embed["prompt_eval_count"] == 4
    assert legacy == {"embedding": [0.1, 0.2]}
    info = ollama.parse_response("/api/embed", "application/json", orjson.dumps(embed))
    assert info.input_tokens == 4


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            401,
            b'{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error"}}',
            "Incorrect API key provided.",
        ),
        (404, b'{"error":"model not found"}\n', "model not found"),
        (422, b'{"detail":"input too long"}', "input too long"),
        (
            502,
            b"<html>Bad Gateway</html>",
            "the backend answered HTTP 502: <html>Bad Gateway</html>",
        ),
        (500, b"", "the backend answered HTTP 500"),
        (429, b'{"error":{"code":"rate_limited"}}', '{"code":"rate_limited"}'),
    ],
)
def test_upstream_errors_become_ollama_error_bodies(status, body, message):
    translated = translate.translate_error(status, body)

    assert translated == orjson.dumps({"error": message})
    assert ollama_client.ResponseError(translated.decode(), status).error == message


# --- Replies from a real OpenAI-compatible server (the simulator's /v1) ----------------------


def exchange(url: str, path: str, body: bytes) -> tuple[int, bytes]:
    with httpx.Client(timeout=10) as client:
        reply = client.post(url + path, content=body)
    return reply.status_code, reply.content


def through_v1(sim, path: str, native: dict) -> tuple[str, bytes]:
    """The native request translated, sent to /v1, and the raw reply bytes translated back."""
    openai_path, body = translate_request(path, json.dumps(native).encode())
    stream = native.get("stream", True) and path in {"/api/chat", "/api/generate"}
    translator = ResponseTranslator(path, stream, native["model"])
    output = b""
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", sim.url + openai_path, content=body) as reply,
    ):
        assert reply.status_code == 200
        for raw in reply.iter_raw():
            output += translator.feed(raw)
    return translator.content_type, output + translator.finish()


def validated(path: str, content_type: str, output: bytes) -> None:
    """Every line parses as the official client's type for the route."""
    kind = ollama_client.ChatResponse if path == "/api/chat" else ollama_client.GenerateResponse
    if content_type == "application/x-ndjson":
        assert output.endswith(b"\n")
        for line in output.split(b"\n")[:-1]:
            kind.model_validate_json(line)
    else:
        assert not output.endswith(b"\n")
        kind.model_validate_json(output)


def what_was_said(info: ollama.ResponseInfo) -> tuple:
    calls = [(c["function"]["name"], c["function"]["arguments"]) for c in info.tool_calls]
    return info.text, info.thinking, calls, info.output_tokens, info.done_reason, info.error


@pytest.mark.parametrize(
    ("path", "native"),
    [
        ("/api/chat", {"model": "llama3.2", "messages": HELLO, "options": {"num_predict": 5}}),
        ("/api/chat", {"model": "llama3.2", "messages": HELLO, "stream": False}),
        ("/api/chat", {"model": "qwen3", "messages": HELLO, "options": {"num_predict": 3}}),
        ("/api/chat", {"model": "qwen3", "messages": HELLO, "stream": False}),
        ("/api/chat", {"model": "llama3.2", "messages": HELLO, "tools": [WEATHER_TOOL]}),
        (
            "/api/chat",
            {"model": "llama3.2", "messages": HELLO, "tools": [WEATHER_TOOL], "stream": False},
        ),
        ("/api/chat", {"model": "llama3.2", "messages": HELLO, "format": "json"}),
        (
            "/api/chat",
            {"model": "llama3.2", "messages": HELLO, "options": {"stop": ["light"]}},
        ),
        (
            "/api/generate",
            {"model": "llama3.2", "prompt": "Once", "options": {"num_predict": 6}},
        ),
        ("/api/generate", {"model": "llama3.2", "prompt": "Once", "stream": False}),
    ],
)
def test_the_simulators_v1_replies_translate_to_what_its_native_routes_answer(sim, path, native):
    content_type, output = through_v1(sim, path, native)
    status, direct = exchange(sim.url, path, json.dumps(native).encode())

    assert status == 200
    validated(path, content_type, output)
    translated = ollama.parse_response(path, content_type, output)
    expected = ollama.parse_response(path, content_type, direct)
    assert what_was_said(translated) == what_was_said(expected)
    assert translated.text or translated.tool_calls
    assert translated.input_tokens and translated.total_duration_seconds
    assert translated.done
    if content_type == "application/x-ndjson":
        assert translated.eval_duration_seconds and translated.prompt_eval_duration_seconds


def test_chat_input_tokens_match_the_native_route_and_images_reach_the_model(sim):
    image_chat = {
        "model": "llava",
        "messages": [{"role": "user", "content": "What is this?", "images": [PNG]}],
        "stream": False,
    }
    plain_chat = {"model": "llama3.2", "messages": HELLO, "options": {"num_predict": 2}}

    _, with_image = through_v1(sim, "/api/chat", image_chat)
    content_type, plain = through_v1(sim, "/api/chat", plain_chat)
    _, direct = exchange(sim.url, "/api/chat", json.dumps(plain_chat).encode())

    assert json.loads(with_image)["prompt_eval_count"] >= 576  # the simulator's cost of an image
    translated = ollama.parse_response("/api/chat", content_type, plain)
    assert translated.input_tokens == ollama.parse_response("/api/chat", "", direct).input_tokens
    assert translated.text == simulated_text(2)


def test_the_simulators_v1_embeddings_translate_to_what_its_native_routes_answer(sim):
    embed = {"model": "all-minilm", "input": ["why is the sky blue", "because"]}
    legacy = {"model": "all-minilm", "prompt": "why is the sky blue"}

    _, embedded = through_v1(sim, "/api/embed", embed)
    _, legacy_embedded = through_v1(sim, "/api/embeddings", legacy)
    _, direct = exchange(sim.url, "/api/embed", json.dumps(embed).encode())

    translated = ollama_client.EmbedResponse.model_validate_json(embedded)
    native = ollama_client.EmbedResponse.model_validate_json(direct)
    assert len(translated.embeddings) == 2
    for ours, theirs in zip(translated.embeddings, native.embeddings, strict=True):
        assert ours == pytest.approx(theirs, abs=1e-6)
    assert translated.prompt_eval_count == native.prompt_eval_count
    single = ollama_client.EmbeddingsResponse.model_validate_json(legacy_embedded)
    assert single.embedding == pytest.approx(native.embeddings[0], abs=1e-6)


def test_the_simulators_v1_errors_translate_to_its_native_error_text(sim):
    native = {"model": "missing", "messages": HELLO, "stream": False}
    openai_path, body = translate_request("/api/chat", json.dumps(native).encode())

    status, error = exchange(sim.url, openai_path, body)
    native_status, native_error = exchange(sim.url, "/api/chat", json.dumps(native).encode())

    assert status == native_status == 404
    assert translate.translate_error(status, error) == native_error


@pytest.fixture
def translating_client(sim):
    """The official client, with this module between it and the simulator's /v1 (the part of
    the forwarder that calls it, reduced to an httpx transport)."""
    with httpx.Client(base_url=sim.url, timeout=10) as upstream:

        def exchange_through_v1(request: httpx.Request) -> httpx.Response:
            native = json.loads(request.read())
            openai_path, body = translate_request(request.url.path, request.content)
            stream = native.get("stream", True)
            translator = ResponseTranslator(request.url.path, stream, native["model"])
            sent = upstream.build_request("POST", openai_path, content=body)
            reply = upstream.send(sent, stream=True)
            if reply.status_code != 200:
                error = translate.translate_error(reply.status_code, reply.read())
                return httpx.Response(reply.status_code, content=error)

            def relay():
                try:
                    for raw in reply.iter_raw():
                        yield translator.feed(raw)
                finally:
                    reply.close()
                yield translator.finish()

            headers = {"content-type": translator.content_type}
            return httpx.Response(200, headers=headers, content=relay())

        transport = httpx.MockTransport(exchange_through_v1)
        yield ollama_client.Client(host=sim.url, transport=transport)


def test_the_official_client_chats_and_generates_with_an_openai_compatible_server(
    translating_client,
):
    client = translating_client

    parts = list(client.chat("llama3.2", messages=HELLO, stream=True, options={"num_predict": 4}))
    whole = client.chat("qwen3", messages=HELLO, options={"num_predict": 2})
    tool = client.chat("llama3.2", messages=HELLO, tools=[WEATHER_TOOL])
    generated = client.generate("llama3.2", prompt="Once", options={"num_predict": 3})
    embedded = client.embed("all-minilm", input=["a", "b"])
    with pytest.raises(ollama_client.ResponseError) as missing:
        client.chat("missing", messages=HELLO)

    assert "".join(p.message.content for p in parts) == simulated_text(4)
    assert (parts[-1].done, parts[-1].done_reason, parts[-1].eval_count) == (True, "length", 4)
    assert parts[-1].prompt_eval_count and parts[-1].eval_duration and parts[-1].total_duration
    assert whole.message.content == simulated_text(2) and whole.message.thinking
    assert tool.message.tool_calls[0].function.arguments == {"city": "Paris"}
    assert generated.response == simulated_text(3) and generated.eval_count == 3
    assert len(embedded.embeddings) == 2 and embedded.prompt_eval_count
    assert (missing.value.status_code, missing.value.error) == (404, "model 'missing' not found")
