"""Writing responses the way Ollama's gin handlers do.

:class:`Output` is the native format (NDJSON streams, ``c.JSON`` bodies) and
the chunk-per-write machinery every format shares; the OpenAI formats build on
it in :mod:`.openai_output`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .errors import ApiError, ClientGone, ServerDrop
from .knobs import Knobs
from .state import WRITTEN_KEY
from .wire import go_json

NATIVE_JSON = "application/json; charset=utf-8"
PLAIN_JSON = "application/json"
NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"


def native_json(obj: Any, status: int = 200, content_type: str = NATIVE_JSON) -> web.Response:
    """gin ``c.JSON``: compact, no trailing newline, with Content-Length."""
    return web.Response(status=status, body=go_json(obj), headers={"Content-Type": content_type})


def native_error(error: ApiError) -> web.Response:
    content_type = PLAIN_JSON if error.from_stream else NATIVE_JSON
    return native_json({"error": error.message}, error.status, content_type)


def plain_text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=text.encode("utf-8"),
        headers={"Content-Type": "text/plain", **(headers or {})},
    )


def _split_point(data: bytes) -> int:
    """Index just after the first lead byte of a multi-byte UTF-8 character."""
    for index, byte in enumerate(data):
        if byte >= 0xC0:
            return index + 1
    return 0


class Output:
    """Turns native Ollama response objects into one wire format.

    Subclasses mirror Ollama's layering: handlers always produce native chunks;
    the OpenAI outputs convert them like Ollama's ``middleware/openai.go``.
    """

    stream_content_type = NDJSON

    def __init__(self, request: web.Request, knobs: Knobs) -> None:
        self.request = request
        self.knobs = knobs
        self.response: web.StreamResponse | None = None

    @property
    def started(self) -> bool:
        return self.response is not None

    async def write(self, data: bytes) -> None:
        """Write one line/frame as its own chunk (headers go with the first)."""
        try:
            if self.response is None:
                self.response = web.StreamResponse(
                    headers={"Content-Type": self.stream_content_type}
                )
                await self.response.prepare(self.request)
            self.request[WRITTEN_KEY].extend(data)
            cut = _split_point(data) if self.knobs.split_utf8 else 0
            if cut:
                await self.response.write(data[:cut])
                await asyncio.sleep(0.005)
                await self.response.write(data[cut:])
            else:
                await self.response.write(data)
        except ConnectionResetError as error:
            raise ClientGone(self.response) from error
        # Yield even when pacing is off so a vanished peer is noticed promptly.
        await asyncio.sleep(0)

    async def finish(self) -> web.StreamResponse:
        assert self.response is not None
        try:
            await self.response.write_eof()
        except ConnectionResetError as error:
            raise ClientGone(self.response) from error
        return self.response

    def drop(self) -> ServerDrop:
        """Abort the connection mid-stream (``X-Sim-Fail: drop``)."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        return ServerDrop(self.response)

    # Overridden by wire formats.
    async def chunk(self, obj: dict[str, Any]) -> None:
        await self.write(go_json(obj) + b"\n")

    async def stream_error(self, message: str) -> web.StreamResponse:
        await self.write(go_json({"error": message}) + b"\n")
        return await self.finish()

    def single(self, obj: dict[str, Any]) -> web.Response:
        return native_json(obj)

    async def load_reply(self, obj: dict[str, Any], stream: bool) -> web.StreamResponse:
        # Ollama answers load/unload with c.JSON even for streaming requests.
        return self.single(obj)

    def error(self, error: ApiError) -> web.Response:
        return native_error(error)
