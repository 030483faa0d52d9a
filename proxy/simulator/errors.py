"""Ollama's error texts and the exceptions that carry an outcome out of a handler."""

from __future__ import annotations

from aiohttp import web

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
MIDSTREAM_MESSAGE = "an error was encountered while running the model: unexpected EOF"
RUNNER_CRASH_MESSAGE = "llama runner process has terminated: exit status 2"
RUNNER_MESSAGES = {429: "rate limit exceeded", 503: "model is overloaded"}


class ApiError(Exception):
    """An Ollama error reply: ``{"error": message}`` with an HTTP status.

    ``from_stream`` marks errors raised inside Ollama's ``streamResponse``
    before the first byte, which are sent as ``application/json`` (no charset).
    """

    def __init__(self, status: int, message: str, *, from_stream: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.from_stream = from_stream


class ClientGone(Exception):
    """The client closed the connection while we were writing to it."""

    def __init__(self, response: web.StreamResponse | None) -> None:
        super().__init__("client disconnected")
        self.response = response


class ServerDrop(Exception):
    """We aborted the connection on purpose (``X-Sim-Fail: drop``)."""

    def __init__(self, response: web.StreamResponse | None) -> None:
        super().__init__("connection dropped by the simulator")
        self.response = response
