"""Reading Ollama's requests and replies (the vocabulary module), on bytes as Ollama writes them."""

from proxy import ollama

CHAT_STREAM = (
    b'{"model":"llama3.2","created_at":"2025-07-07T20:22:19.184789Z","message":{"role":"assistant",'
    b'"content":"The"},"done":false}\n'
    b'{"model":"llama3.2","created_at":"2025-07-07T20:22:19.190211Z","message":{"role":"assistant",'
    b'"content":" sky"},"done":false}\n'
    b'{"model":"llama3.2","created_at":"2025-07-07T20:22:19.19314Z","message":{"role":"assistant",'
    b'"content":""},"done":true,"done_reason":"stop","total_duration":182242375,'
    b'"load_duration":41295167,"prompt_eval_count":169,"prompt_eval_duration":24573166,'
    b'"eval_count":2,"eval_duration":115959084}\n'
)


def test_it_reads_text_tokens_and_durations_from_a_native_chat_stream():
    info = ollama.parse_response("/api/chat", "application/x-ndjson", CHAT_STREAM)
    assert info.text == "The sky"
    assert (info.input_tokens, info.output_tokens) == (169, 2)
    assert info.done and info.done_reason == "stop"
    assert info.eval_duration_seconds == 0.115959084
    assert info.load_duration_seconds == 0.041295167


def test_a_stream_with_a_bad_line_is_read_line_by_line():
    """A line cut short (the retention cap) or not JSON spoils the one-array parse: the
    other lines are still read, and a value JSON allows but orjson refuses (NaN) too."""
    lines = CHAT_STREAM.split(b"\n")
    body = b"\n".join([lines[0], b'{"model":"llama3.2","mess', b"not json", lines[1], lines[2]])
    info = ollama.parse_response("/api/chat", "application/x-ndjson", body)
    assert info.text == "The sky" and info.chunks == 3
    assert (info.input_tokens, info.output_tokens) == (169, 2)
    body = b'{"response":"a","done":false,"x":NaN}\n{"response":"b","done":true}\n'
    assert ollama.parse_response("/api/generate", "application/x-ndjson", body).text == "ab"


def test_it_keeps_thinking_and_tool_calls_found_in_the_final_chunk():
    body = (
        b'{"model":"qwen3","message":{"role":"assistant","content":"","thinking":"Let me"},'
        b'"done":false}\n'
        b'{"model":"qwen3","message":{"role":"assistant","content":"","tool_calls":[{"function":'
        b'{"index":0,"name":"get_weather","arguments":{"city":"Tokyo"}}}]},"done":true,'
        b'"done_reason":"stop","eval_count":5}\n'
    )
    info = ollama.parse_response("/api/chat", "application/x-ndjson", body)
    assert info.thinking == "Let me"
    assert info.tool_calls[0]["function"]["arguments"] == {"city": "Tokyo"}


def test_it_records_an_error_line_in_the_middle_of_a_stream():
    body = b'{"response":"Hi","done":false}\n{"error":"an error was encountered"}\n'
    info = ollama.parse_response("/api/generate", "application/x-ndjson", body)
    assert info.text == "Hi"
    assert info.error == "an error was encountered"
    assert not info.done


def test_it_reads_an_openai_stream_with_usage_and_tool_call_fragments():
    frames = [
        b'{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},'
        b'"finish_reason":null}]}',
        b'{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}',
        b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":'
        b'{"name":"f","arguments":"{\\"a\\":"}}]},"finish_reason":null}]}',
        b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},'
        b'"finish_reason":null}]}',
        b'{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}',
        b'{"choices":[],"usage":{"prompt_tokens":26,"completion_tokens":2,"total_tokens":28}}',
    ]
    body = b"".join(b"data: " + frame + b"\n\n" for frame in frames) + b"data: [DONE]\n\n"
    info = ollama.parse_response("/v1/chat/completions", "text/event-stream", body)
    assert info.text == "Hello"
    assert info.tool_calls == [{"id": "call_1", "function": {"name": "f", "arguments": '{"a":1}'}}]
    assert (info.input_tokens, info.output_tokens) == (26, 2)
    assert info.done_reason == "tool_calls"


def test_it_keeps_the_real_usage_when_completions_chunks_carry_zero_usage():
    zero = b'"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}'
    body = (
        b'data: {"choices":[{"text":"Hi","index":0,"finish_reason":null}],' + zero + b"}\n\n"
        b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1,'
        b'"total_tokens":5}}\n\n'
        b'data: {"choices":[{"text":"","index":0,"finish_reason":"stop"}],' + zero + b"}\n\n"
        b"data: [DONE]\n\n"
    )
    info = ollama.parse_response("/v1/completions", "text/event-stream", body)
    assert (info.input_tokens, info.output_tokens) == (4, 1)


def test_it_reads_an_openai_error_body():
    body = b'{"error":{"message":"model \\"x\\" not found","type":"api_error","param":null}}\n'
    info = ollama.parse_response("/v1/chat/completions", "application/json", body)
    assert info.error == 'model "x" not found'


def test_it_makes_a_chat_history_readable_and_leaves_image_payloads_out():
    body = (
        b'{"model":"llava","messages":[{"role":"system","content":"Be brief."},'
        b'{"role":"user","content":"What is this?","images":["iVBORw0KGgo="]}],'
        b'"options":{"temperature":0.2}}'
    )
    info = ollama.parse_request("/api/chat", body)
    assert info.model == "llava"
    assert info.prompt == "[system]\nBe brief.\n\n[user]\nWhat is this?\n[image]"
    assert info.messages[1] == {"role": "user", "content": "What is this?", "images": 1}
    assert "iVBOR" not in str(info.messages)
    assert info.options == {"temperature": 0.2}


def test_it_reads_openai_content_parts():
    body = (
        b'{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"Look"},'
        b'{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}'
    )
    info = ollama.parse_request("/v1/chat/completions", body)
    assert info.prompt == "[user]\nLook\n[image]"


def test_it_includes_the_system_prompt_of_a_generate_request():
    info = ollama.parse_request("/api/generate", b'{"model":"m","prompt":"Hi","system":"Be kind"}')
    assert info.prompt == "[system]\nBe kind\n\n[user]\nHi"


def test_it_survives_a_body_that_is_not_json():
    info = ollama.parse_request("/api/chat", b"model=llama3.2")
    assert info.error and info.model == ""


def test_it_knows_ollama_paths_from_ours():
    assert all(map(ollama.is_ollama_path, ["/", "/api/chat", "/v1/models", "/api/x/y"]))
    assert not any(
        map(ollama.is_ollama_path, ["/admin/", "/metrics", "/apis", "/v1x", "/dashboard/"])
    )


def test_it_takes_the_stream_flag_from_the_request_with_ollamas_defaults():
    def stream(path, body):
        return ollama.parse_request(path, body).stream

    assert stream("/api/chat", b'{"model":"m"}') is True
    assert stream("/api/chat", b'{"model":"m","stream":false}') is False
    assert stream("/v1/chat/completions", b'{"model":"m"}') is False
    assert stream("/v1/completions", b'{"model":"m","stream":true}') is True
    assert stream("/api/embed", b'{"model":"m"}') is False
