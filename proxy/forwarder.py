"""The lean ASGI path for Ollama's routes: relay bytes unchanged, note what happened, record it.

No Django middleware runs here (DESIGN.md §1: the request cycle and middleware cost ~1.8 ms per
request on a 2-core box, a plain ASGI forwarder ~0.1-0.15 ms). Per chunk the hot path does one
append and one send; everything else happens before the first byte or in the recorder's writer.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from time import perf_counter
from typing import NoReturn

import aiohttp
from django.conf import settings
from yarl import URL

from . import access, http1, metrics, ollama, translate
from .backends import Registry, Route, Upstream
from .exchange import Exchange
from .recorder import Recorder

log = logging.getLogger(__name__)

JSON_UTF8 = (b"content-type", b"application/json; charset=utf-8")
JSON = (b"content-type", b"application/json")

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


# What a relay to an upstream can raise; either client's.
UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError, http1.UpstreamError)


class BodyTooLarge(Exception):
    pass


class StreamCut(Exception):
    """The upstream failed after the reply's headers went out. Raised to the ASGI server, which
    then drops the client's connection: ASGI has no other way to say a reply is incomplete.
    The server's traceback for it is left out of the log (`quiet_stream_cuts`): the exchange
    is recorded with its error, counted in the metrics, and logged here in one line."""


def quiet_stream_cuts(record) -> bool:
    """A filter for the ASGI server's error logger: no traceback for a `StreamCut`."""
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, StreamCut)


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
        self.client: http1.Client | None = None
        self.recorder: Recorder | None = None
        self.access: access.Gate | None = None
        self.backends: Registry | None = None
        self.origin_allowed = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.relaying = 0  # requests between the upstream call and their record
        self.idle: asyncio.Event | None = None

    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.idle = asyncio.Event()  # per start: an event belongs to one loop
        self.idle.set()
        self.allow_any_origin = "*" in settings.PROXY_CORS_ORIGINS
        self.origin_allowed = origin_matcher(OLLAMA_ORIGINS + settings.PROXY_CORS_ORIGINS)
        self.session = ollama.open_session()
        self.client = http1.Client(
            connect_timeout=settings.PROXY_CONNECT_TIMEOUT,
            idle_timeout=settings.PROXY_IDLE_TIMEOUT,
        )
        self.recorder = Recorder()
        self.recorder.start()
        self.access = access.Gate()
        await self.access.start()
        self.backends = Registry(self.session)
        await self.backends.start()

    async def drained(self) -> None:
        """Wait until no request is being relayed and every record is written or spooled."""
        await self.idle.wait()
        await self.recorder.flushed()

    async def shutdown(self) -> None:
        if self.backends is not None:
            await self.backends.stop()
        if self.access is not None:
            await self.access.stop()
        if self.recorder is not None:
            await self.recorder.stop()
        if self.client is not None:
            await self.client.close()
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
        target = scope.get("raw_path", path.encode()).decode("latin-1")
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
        merged = method == "GET" and path in ollama.MERGED_LISTS and self.backends.single is None
        if not merged:
            route = self.backends.route(method, path, body if isinstance(body, bytes) else None)

        # With the loop at hand: on Python 3.11 looking it up costs a getpid() system call.
        self.relaying += 1
        self.idle.clear()
        task = asyncio.current_task(self.loop)
        watcher = self.loop.create_task(_watch_disconnect(receive, task, exchange))
        metrics.REQUESTS_IN_FLIGHT.inc()
        try:
            if merged:
                await self._merged(path, send, exchange, extra_headers)
            else:
                await self._relay(
                    method, target, forwarded, body, send, exchange, extra_headers, route
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

    async def _relay(
        self, method, target, headers, body, send, exchange, extra_headers, route: Route
    ) -> None:
        """Send the request to the route's backends in turn until one answers: the next is
        tried on a connect failure or a 503 (busy), never once a byte went to the client."""
        last = route.upstreams[-1]
        for upstream in route.upstreams:
            exchange.backend = upstream.name
            translator = None
            path, sent_headers, data = target, upstream.headers_for(headers), body
            if upstream.hosted and exchange.path in translate.NATIVE_ROUTES:
                try:
                    openai_path, data = translate.translate_request(
                        exchange.path, body, upstream.own_id(route.model)
                    )
                except translate.TranslationError as error:
                    exchange.http_status, exchange.error = 400, str(error)
                    await _respond(
                        send, 400, ollama.error_body(str(error)), [JSON_UTF8, *extra_headers]
                    )
                    return
                path, sent_headers = openai_path, _translated_headers(sent_headers)
                stream = ollama.streams(exchange.path, body)
                translator = translate.ResponseTranslator(exchange.path, stream, route.model)
            upstream.in_flight += 1
            upstream.served += 1
            try:
                answered = await self._attempt(
                    upstream,
                    upstream is last,
                    method,
                    path,
                    sent_headers,
                    data,
                    translator,
                    send,
                    exchange,
                    extra_headers,
                )
            finally:
                upstream.in_flight -= 1
            if answered:
                return

    async def _attempt(
        self, upstream, last, method, path, headers, data, translator, send, exchange, extra_headers
    ) -> bool:
        """One backend's turn: False to try the next (it could not be reached, or was busy),
        True once the client has its answer or an error."""
        lean = (
            upstream.plain is not None
            and translator is None
            and method != "HEAD"
            and not isinstance(data, AsyncIterator)
        )
        try:
            if lean:  # the common case: an Ollama over plain HTTP
                host, port, prefix = upstream.plain
                target = prefix + upstream.path_for(path)
                response = await self.client.request(method, host, port, target, headers, data)
            else:
                response = await self.session.request(
                    method,
                    URL(upstream.url_for(path), encoded=True),
                    headers=headers,
                    data=data or None,
                    allow_redirects=False,
                )
        except UPSTREAM_ERRORS as error:
            status, message, kind = ollama.describe_upstream_error(error, upstream.described())
            metrics.UPSTREAM_ERRORS.labels(kind).inc()
            if ollama.is_connect_failure(error):
                upstream.failed(message)
                if not last:
                    return False
            exchange.http_status = status
            exchange.error = message
            await _respond(send, status, ollama.error_body(message), [JSON_UTF8, *extra_headers])
            return True
        if response.status == 503 and not last:
            response.close()
            return False
        upstream.passed()
        if translator is None:
            await self._stream(upstream, response, send, exchange, extra_headers)
        else:
            await self._translated(upstream, translator, response, send, exchange, extra_headers)
        return True

    async def _stream(self, upstream: Upstream, response, send, exchange, extra_headers) -> None:
        """Relay a backend's reply chunk by chunk, keeping a copy for the record."""
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
            except UPSTREAM_ERRORS as error:
                # Headers are out, so the status can't change: record the failure and cut the
                # connection, so the client sees a broken stream rather than a complete one.
                _cut(upstream, exchange, error)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            exchange.finished = perf_counter()
            completed = True
        finally:
            if completed:
                response.release()
            else:
                response.close()  # closing the connection is what makes Ollama stop generating

    async def _translated(
        self, upstream: Upstream, translator, response, send, exchange, extra_headers
    ) -> None:
        """Relay a hosted API's reply to an Ollama-native request in Ollama's shape, as it
        arrives; the record keeps the Ollama bytes the client got."""
        completed = False
        try:
            exchange.http_status = response.status
            if response.status >= 300:
                body = translate.translate_error(response.status, await response.read())
                exchange.content_type = JSON_UTF8[1].decode()
                exchange.keep(body)
                await _respond(send, response.status, body, [JSON_UTF8, *extra_headers])
                exchange.finished = perf_counter()
                completed = True
                return
            exchange.content_type = translator.content_type
            content_type = (b"content-type", translator.content_type.encode())
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [content_type, *extra_headers],
                }
            )
            keep = exchange.keep
            try:
                async for chunk in response.content.iter_any():
                    out = translator.feed(chunk)
                    if out:
                        keep(out)
                        await send({"type": "http.response.body", "body": out, "more_body": True})
            except UPSTREAM_ERRORS as error:
                _cut(upstream, exchange, error)
            out = translator.finish()
            if out:
                keep(out)
            await send({"type": "http.response.body", "body": out, "more_body": False})
            exchange.finished = perf_counter()
            completed = True
        finally:
            if completed:
                response.release()
            else:
                response.close()

    async def _merged(self, path: str, send, exchange, extra_headers) -> None:
        """Answer `/api/tags`, `/api/ps` or `/v1/models` with every healthy backend's list."""
        body = await self.backends.merged_list(path)
        if body is None:
            status, body = 502, ollama.error_body(f"no backend answered {path}")
            exchange.error = f"no backend answered {path}"
        else:
            status = 200
        # As Ollama answers: gin's c.JSON on /api, Go's JSON encoder (no charset) on /v1.
        content_type = JSON if path.startswith("/v1/") and status == 200 else JSON_UTF8
        exchange.http_status = status
        exchange.content_type = content_type[1].decode()
        exchange.keep(body)
        await _respond(send, status, body, [content_type, *extra_headers])
        exchange.finished = perf_counter()


def _cut(upstream: Upstream, exchange: Exchange, error: BaseException) -> NoReturn:
    """Record an upstream failure mid-reply and cut the client's connection."""
    _status, exchange.error, kind = ollama.describe_upstream_error(error, upstream.described())
    metrics.UPSTREAM_ERRORS.labels(kind).inc()
    log.warning("%s %s: reply cut: %s", exchange.method, exchange.path, exchange.error)
    raise StreamCut(exchange.error) from error


def _translated_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A translated request's headers: JSON it is, and no compression, which the translator
    could not read (the session does not decompress)."""
    dropped = {"content-type", "accept-encoding"}
    kept = [(name, value) for name, value in headers if name not in dropped]
    return [*kept, ("content-type", "application/json")]


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
