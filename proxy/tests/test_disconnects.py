"""A client that goes away closes the upstream request at once, and leaves a cancelled message."""

import json
import socket

import httpx
import pytest

from proxy.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


def raw_request(url: str, path: str, body: dict, headers: dict) -> socket.socket:
    """Send a request on a bare socket, so the test decides exactly when the connection drops."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(payload)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    sock = socket.create_connection((host, int(port)))
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
    return sock


def cancelled_message(proxy) -> Message:
    proxy.flush()
    return Message.objects.get()


def test_it_closes_the_upstream_when_the_client_leaves_before_the_first_byte(proxy, simulator):
    sock = raw_request(
        proxy.url,
        "/api/chat",
        {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}]},
        {"X-Sim-TTFT": "30"},
    )
    simulator.wait_for(requests=1)

    sock.close()

    assert simulator.wait_for(disconnects=1)["disconnects"] == 1
    message = cancelled_message(proxy)
    assert message.status == "cancelled"
    assert message.ttft_seconds is None
    assert message.model == "llama3.2"
    assert message.http_status is None


def test_it_closes_the_upstream_when_the_client_leaves_mid_stream(proxy, simulator):
    body = {"model": "llama3.2", "prompt": "Count", "stream": True}
    headers = {"X-Sim-TPS": "20", "X-Sim-Tokens": "400"}
    with (
        httpx.Client() as client,
        client.stream("POST", f"{proxy.url}/api/generate", json=body, headers=headers) as response,
    ):
        first = json.loads(next(response.iter_lines()))

    assert simulator.wait_for(disconnects=1)["disconnects"] == 1
    message = cancelled_message(proxy)
    assert message.status == "cancelled"
    assert message.http_status == 200
    assert message.response.startswith(first["response"])
    assert message.output_tokens is None  # a cut stream has no final stats
    assert message.ttft_seconds is not None


def test_it_closes_the_upstream_when_the_client_leaves_a_call_that_is_not_streamed(
    proxy, simulator
):
    sock = raw_request(
        proxy.url,
        "/api/generate",
        {"model": "llama3.2", "prompt": "Hi", "stream": False},
        {"X-Sim-TPS": "5", "X-Sim-Tokens": "200"},
    )
    simulator.wait_for(requests=1)

    sock.close()

    assert simulator.wait_for(disconnects=1)["disconnects"] == 1
    message = cancelled_message(proxy)
    assert message.status == "cancelled"
    assert message.response == ""


def test_it_stops_an_unrecorded_route_too_when_the_client_leaves(proxy, simulator):
    sock = raw_request(proxy.url, "/api/show", {"model": "llama3.2"}, {"X-Sim-TTFT": "30"})
    simulator.wait_for(requests=1)

    sock.close()

    assert simulator.wait_for(disconnects=1)["disconnects"] == 1
    proxy.flush()
    assert not Message.objects.exists()
