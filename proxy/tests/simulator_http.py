"""Raw HTTP for the simulator tests: one-shot exchanges, bare sockets, NDJSON and SSE bodies."""

from __future__ import annotations

import http.client
import json
import socket

from proxy.simulator import RunningSimulator

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
