"""The lean ASGI path for Ollama's routes: relay bytes unchanged, note what happened, record it.

No Django middleware runs here (DESIGN.md §1: the request cycle and middleware cost ~1.8 ms per
request on a 2-core box, a plain ASGI forwarder ~0.1-0.15 ms). Per chunk the hot path does one
append and one send; everything else happens before the first byte or in the recorder's writer.
"""

from __future__ import annotations

import asyncio
import logging
import re
from time import perf_counter

import aiohttp
from django.conf import settings
from yarl import URL

from . import access, metrics, ollama
from .exchange import Exchange
from .recorder import Recorder

log = logging.getLogger(__name__)

JSON_UTF8 = (b"content-type", b"application/json; charset=utf-8")

# Ollama's built-in CORS origins (OLLAMA_ORIGINS defaults); PROXY_CORS_ORIGINS adds to them.
OLLAMA_ORIGINS = [
    f"{scheme}://{host}{port}"
    for scheme in ("http", "https")
    for host in ("localhost", "127.0.0.1", "0.0.0.0")
    for port in ("", ":*")
] + ["app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]
PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"),
    (
        b"access-control-allow-headers",
        b"Authorization,Content-Type,User-Agent,Accept,X-Requested-With,Openai-Beta,"
        b"X-Stainless-Arch,X-Stainless-Async,X-Stainless-Custom-Poll-Interval,"
        b"X-Stainless-Helper-Method,X-Stainless-Lang,X-Stainless-Os,X-Stainless-Package-Version,"
        b"X-Stainless-Poll-Helper,X-Stainless-Retry-Count,X-Stainless-Runtime,"
        b"X-Stainless-Runtime-Version,X-Stainless-Timeout",
    ),
    (b"access-control-max-age", b"43200"),
    (b"vary", b"Origin"),
    (b"vary", b"Access-Control-Request-Method"),
    (b"vary", b"Access-Control-Request-Headers"),
]
# Not forwarded upstream besides the hop-by-hop ones: the upstream's own Host is sent, CORS is
# answered here, and `Expect: 100-continue` is the ASGI server's business with the client.
DROPPED_REQUEST_HEADERS = ollama.HOP_BY_HOP_HEADERS | {"host", "origin", "expect"}
# The ASGI server adds its own Date.
DROPPED_RESPONSE_HEADERS = frozenset(
    name.encode() for name in (ollama.HOP_BY_HOP_HEADERS - {"content-length"}) | {"date"}
)


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    """The client went away while its request body was still arriving."""


def origin_matcher(patterns: list[str]):
    """A predicate for allowed origins, with OLLAMA_ORIGINS' `*` wildcard syntax."""
    if "*" in patterns:
        return lambda origin: True
    regex = re.compile(
        "|".join(".*".join(re.escape(part) for part in pattern.split("*")) for pattern in patterns)
    )
    return lambda origin: regex.fullmatch(origin) is not None


class Forwarder:
    """The ASGI app for `/`, `/api/*` and `/v1/*`; one per process, started by the lifespan."""

    def __init__(self):
        self.session: aiohttp.ClientSession | None = None
        self.recorder: Recorder | None = None
        self.access: access.Gate | None = None
        self.upstream = ""
        self.origin_allowed = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.relaying = 0  # requests between the upstream call and their record
        self.idle: asyncio.Event | None = None

    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.idle = asyncio.Event()  # per start: an event belongs to one loop
        self.idle.set()
        self.upstream = settings.OLLAMA_URL
        self.allow_any_origin = "*" in settings.PROXY_CORS_ORIGINS
        self.origin_allowed = origin_matcher(OLLAMA_ORIGINS + settings.PROXY_CORS_ORIGINS)
        self.session = ollama.open_session()
        self.recorder = Recorder()
        self.recorder.start()
        self.access = access.Gate()
        await self.access.start()

    async def drained(self) -> None:
        """Wait until no request is being relayed and every record is written or spooled."""
        await self.idle.wait()
        await self.recorder.flushed()

    async def shutdown(self) -> None:
        if self.access is not None:
            await self.access.stop()
        if self.recorder is not None:
            await self.recorder.stop()
        if self.session is not None:
            await self.session.close()

    async def __call__(self, scope, receive, send) -> None:
        method = scope["method"]
        path = scope["path"]
        headers: dict[str, str] = {}
        forwarded: list[tuple[str, str]] = []
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = value
            if name not in DROPPED_REQUEST_HEADERS:
                forwarded.append((name, value))
        if "connection" in headers:
            named = {token.strip().lower() for token in headers["connection"].split(",")}
            forwarded = [(name, value) for name, value in forwarded if name not in named]

        client = scope.get("client")
        exchange = Exchange(method, path, client[0] if client else None, headers)
        extra_headers = [(b"x-request-id", exchange.request_id.hex.encode())]

        origin = headers.get("origin")
        if origin and not _same_origin(origin, headers.get("host", "")):
            if not self.origin_allowed(origin):
                await _respond(send, 403, b"", extra_headers)
                return
            allowed = b"*" if self.allow_any_origin else origin.encode("latin-1")
            extra_headers.append((b"access-control-allow-origin", allowed))
            if method == "OPTIONS" and "access-control-request-method" in headers:
                await _respond(send, 204, b"", extra_headers + PREFLIGHT_HEADERS)
                return
            extra_headers.append((b"vary", b"Origin"))

        # Keys, management routes and rate limits (proxy/access.py), only when one is in use,
        # or when a key of ours arrives before this worker has read that any exists.
        if self.access.enabled or access.SCHEME in headers.get("authorization", ""):
            refusal = await self.access.admit(exchange, headers, forwarded)
            if refusal is not None:
                await refusal.respond(send, extra_headers)
                self.recorder.record(exchange, store=False)
                return

        # Every exchange goes to the recorder, which counts them all in the metrics and stores
        # those to a model route as messages.
        recording = method == "POST" and path in ollama.MODEL_ROUTES
        target = self.upstream + scope.get("raw_path", path.encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        try:
            if ollama.is_streamed_upload(method, path):
                body = _stream_body(receive)
            else:
                body = await _read_body(receive, headers, settings.PROXY_MAX_BODY_BYTES)
                exchange.request_body = body if recording else b""
        except BodyTooLarge as error:
            await _respond(send, 413, ollama.error_body(str(error)), [JSON_UTF8, *extra_headers])
            return
        except ClientGone:
            exchange.cancelled = True
            exchange.finished = perf_counter()
            self.recorder.record(exchange, store=recording)
            return

        # With the loop at hand: on Python 3.11 looking it up costs a getpid() system call.
        self.relaying += 1
        self.idle.clear()
        task = asyncio.current_task(self.loop)
        watcher = self.loop.create_task(_watch_disconnect(receive, task, exchange))
        metrics.REQUESTS_IN_FLIGHT.inc()
        try:
            await self._relay(
                method, URL(target, encoded=True), forwarded, body, send, exchange, extra_headers
            )
        except asyncio.CancelledError:
            if not exchange.cancelled:
                raise
            task.uncancel()
        except ClientGone:
            exchange.cancelled = True
        finally:
            metrics.REQUESTS_IN_FLIGHT.dec()
            if exchange.finished is None:
                exchange.finished = perf_counter()
            watcher.cancel()
            self.recorder.record(exchange, store=recording)
            self.relaying -= 1
            if not self.relaying:
                self.idle.set()

    async def _relay(self, method, url, headers, body, send, exchange, extra_headers) -> None:
        try:
            response = await self.session.request(
                method, url, headers=headers, data=body or None, allow_redirects=False
            )
        except (aiohttp.ClientError, TimeoutError) as error:
            status, message, kind = ollama.describe_upstream_error(error)
            metrics.UPSTREAM_ERRORS.labels(kind).inc()
            exchange.http_status = status
            exchange.error = message
            await _respond(send, status, ollama.error_body(message), [JSON_UTF8, *extra_headers])
            return

        completed = False
        try:
            exchange.http_status = response.status
            exchange.content_type = response.headers.get("Content-Type", "")
            reply_headers = [
                (name.lower(), value)
                for name, value in response.raw_headers
                if name.lower() not in DROPPED_RESPONSE_HEADERS
            ]
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": reply_headers + extra_headers,
                }
            )
            keep = exchange.keep
            try:
                async for chunk in response.content.iter_any():
                    keep(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (aiohttp.ClientError, TimeoutError) as error:
                # Headers are out, so the status can't change: record the failure and cut the
                # connection, so the client sees a broken stream rather than a complete one.
                _status, exchange.error, kind = ollama.describe_upstream_error(error)
                metrics.UPSTREAM_ERRORS.labels(kind).inc()
                raise
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            exchange.finished = perf_counter()
            completed = True
        finally:
            if completed:
                response.release()
            else:
                response.close()  # closing the connection is what makes Ollama stop generating


def _same_origin(origin: str, host: str) -> bool:
    return origin in {f"http://{host}", f"https://{host}"}


async def _read_body(receive, headers: dict[str, str], limit: int) -> bytes:
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(_too_large(int(declared), limit))
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(_too_large(size, limit))
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int) -> str:
    return f"request body too large: {size} bytes, the limit is {limit} (PROXY_MAX_BODY_BYTES)"


async def _stream_body(receive):
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        yield message.get("body", b"")
        more = message.get("more_body", False)


async def _watch_disconnect(receive, task: asyncio.Task, exchange: Exchange) -> None:
    """Cancel the relay when the client goes away, before the first byte or mid-stream."""
    if ollama.is_streamed_upload(exchange.method, exchange.path):
        return  # the upload generator owns `receive` until the body is through
    message = await receive()
    if message["type"] == "http.disconnect" and exchange.finished is None:
        exchange.cancelled = True
        task.cancel()


async def _respond(send, status: int, body: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
