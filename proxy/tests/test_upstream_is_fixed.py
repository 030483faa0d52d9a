"""The upstream is fixed by configuration: nothing in a request (Host, the request target,
forwarding headers, the path, the body) makes the proxy call another host.

A second simulated Ollama plays the host an attacker would like the proxy to call; it must see
no request at all.
"""

import json
import socket

import httpx
import pytest

from proxy.simulator import RunningSimulator

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def evil():
    with RunningSimulator(port=0, tokens_per_second=0, ttft=0) as sim:
        yield sim


def raw_request(proxy_url: str, head: str, body: bytes = b"") -> bytes:
    """One request written byte for byte (request target included); the reply's bytes."""
    host, port = proxy_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_an_absolute_uri_request_target_goes_to_the_configured_upstream(proxy, simulator, evil):
    body = json.dumps({"model": "llama3.2", "prompt": "Hi", "stream": False}).encode()
    target = f"{evil.url}/api/generate"

    reply = raw_request(
        proxy.url,
        f"POST {target} HTTP/1.1\nHost: {evil.url.removeprefix('http://')}\n"
        f"Content-Type: application/json\nContent-Length: {len(body)}\nConnection: close\n",
        body,
    )

    assert reply.startswith(b"HTTP/1.1 200")
    assert simulator.stats()["last_request"]["path"] == "/api/generate"
    assert evil.stats()["requests"] == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "{evil}"},
        {"X-Forwarded-Host": "{evil}", "X-Forwarded-Proto": "http", "X-Forwarded-Port": "{port}"},
        {"Forwarded": "host={evil};proto=http"},
        {"X-Original-URL": "http://{evil}/api/tags", "X-Rewrite-URL": "http://{evil}/api/tags"},
        {"X-Host": "{evil}", "X-Forwarded-Server": "{evil}", "X-HTTP-Host-Override": "{evil}"},
    ],
)
def test_host_and_forwarding_headers_do_not_choose_the_upstream(proxy, simulator, evil, headers):
    evil_host = evil.url.removeprefix("http://")
    sent = {name: value.format(evil=evil_host, port=evil.port) for name, value in headers.items()}

    response = httpx.get(f"{proxy.url}/api/tags", headers=sent)

    assert response.status_code == 200
    assert simulator.stats()["requests"] == 1
    assert evil.stats()["requests"] == 0


@pytest.mark.parametrize(
    "path",
    [
        "//{evil}/api/tags",
        "/api/..//{evil}/api/tags",
        "/api/@{evil}/api/tags",
        "/api/tags@{evil}",
        "/%2F%2F{evil}/api/tags",
        "/api/%2F%2F{evil}/api/tags",
        "/v1/..%2F..%2F{evil}/v1/models",
        "/api/tags?url=http://{evil}/&host={evil}",
        "%2Fapi/tags",
        "/api%2F{evil}",
    ],
)
def test_paths_naming_another_host_stay_on_the_upstream(proxy, simulator, evil, path):
    target = path.format(evil=evil.url.removeprefix("http://"))

    reply = raw_request(proxy.url, f"GET {target} HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n")

    assert reply.startswith(b"HTTP/1.1 ") and not reply.startswith(b"HTTP/1.1 5")
    assert evil.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/generate", {"model": "http://{evil}/llama3.2", "prompt": "Hi", "stream": False}),
        ("/api/chat", {"model": "llama3.2", "host": "{evil}", "url": "http://{evil}/api/chat"}),
        ("/v1/chat/completions", {"model": "llama3.2", "base_url": "http://{evil}/v1"}),
        ("/api/pull", {"model": "{evil}/library/llama3.2", "insecure": True, "stream": False}),
    ],
)
def test_body_fields_naming_another_host_are_only_relayed(proxy, simulator, evil, path, body):
    evil_host = evil.url.removeprefix("http://")
    sent = json.loads(json.dumps(body).replace("{evil}", evil_host))

    httpx.post(f"{proxy.url}{path}", json=sent, timeout=30)

    seen = simulator.stats()["last_request"]
    assert seen["path"] == path
    assert json.loads(seen["body"]) == sent  # relayed as sent, to the configured upstream
    assert evil.stats()["requests"] == 0
