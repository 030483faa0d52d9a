"""The simulator as a server: gin-like routing and content types, ``/_sim/*``, the CLI, the config.

Runs without Django: ``pytest proxy/tests/test_simulator_server.py -p no:django``.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.simulator import (
    SimulatorConfig,
)
from proxy.tests.simulator_http import (
    HELLO,
    request,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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
