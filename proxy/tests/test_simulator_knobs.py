"""The ``X-Sim-*`` knobs: failures, exact answers, pacing, disconnects, drops and the busy queue.

Runs without Django: ``pytest proxy/tests/test_simulator_knobs.py -p no:django``.
Tests never sleep: they wait on the simulator's counters (``wait_for``) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import ollama
import pytest

from proxy.simulator import (
    BUSY_MESSAGE,
    MIDSTREAM_MESSAGE,
    RUNNER_CRASH_MESSAGE,
    RunningSimulator,
    go_json,
    simulated_text,
)
from proxy.tests.simulator_http import (
    HELLO,
    ndjson,
    open_stream,
    read_until,
    request,
)


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
