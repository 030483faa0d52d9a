"""A lean HTTP/1.1 client for the relay to plain-`http://` Ollamas: one write per request,
httptools' parser on the reply, body bytes handed to the relay as they arrive.

aiohttp's client is general (cookies, redirects, tracing, multidicts, a stream reader with its
own buffers) and costs more Python per request and per chunk than the relay itself; on a 2-core
box that was most of the proxy's added latency (bench/proxy.py, docs/benchmarks.md). This client
does only what the relay needs: keep-alive pooling per host, a connect timeout, an idle-read
timeout, back-pressure (reading pauses while the client is slower than the upstream), and a
clean close when the relay gives up (which is what makes Ollama stop generating). Every
plain-HTTP backend goes through it (an OpenAI-compatible API on plain HTTP too); HTTPS ones,
requests translated for a hosted API, HEAD requests and streamed uploads stay on aiohttp
(proxy/forwarder.py chooses).
"""

from __future__ import annotations

import asyncio
import collections
from time import monotonic

import httptools

HIGH_WATER = 256 * 1024  # bytes read but not yet relayed before reading pauses
LOW_WATER = 64 * 1024
KEEPALIVE_SECONDS = 25.0  # an idle pooled connection older than this is not reused
INLINE_BODY_BYTES = 65536  # a smaller body goes in the same write as the head


class UpstreamError(Exception):
    """The upstream could not be reached, or went away mid-reply."""


class ConnectFailed(UpstreamError):
    """The request never reached the upstream: another backend may be tried."""

    def __init__(self, os_error: OSError | TimeoutError):
        super().__init__(str(os_error) or type(os_error).__name__)
        self.os_error = os_error


class Disconnected(UpstreamError):
    def __init__(self, message: str, received: int = 0):
        super().__init__(message)
        self.received = received  # bytes of the reply read before the connection went


async def _exchange(connection, data: bytes, body: bytes | None, idle_timeout) -> Response:
    response = connection.send(data, body, idle_timeout)
    try:
        await response.head
    except BaseException:
        response.close()  # cancelled, timed out or cut: this connection serves no one else
        raise
    return response


class Client:
    """Pooled connections per (host, port); one per process, like the aiohttp session."""

    def __init__(self, *, connect_timeout: float, idle_timeout: float | None):
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout or None
        self.idle: dict[tuple[str, int], collections.deque[_Connection]] = {}
        self.closed = False

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | None,
    ) -> Response:
        """Send one request; returns once the reply's head is in. Raises ConnectFailed when
        nothing was sent, Disconnected or TimeoutError after."""
        authority = f"[{host}]" if ":" in host else host
        if port != 80:
            authority += f":{port}"
        head = [f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in headers]
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body) if body else 0}\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1")
        if body:
            data += body if len(body) < INLINE_BODY_BYTES else b""
        key = (host, port)
        connection = self._pooled(key)
        if connection is not None:
            try:
                return await _exchange(connection, data, body, self.idle_timeout)
            except Disconnected as error:
                # A kept-alive connection the upstream had closed (a restart, its own idle
                # timeout): nothing came back, so the request goes again on a new connection.
                if error.received:
                    raise
        connection = await self._connect(key)
        return await _exchange(connection, data, body, self.idle_timeout)

    def _pooled(self, key) -> _Connection | None:
        idle = self.idle.get(key)
        now = monotonic()
        while idle:
            connection = idle.pop()
            if connection.reusable and now - connection.released < KEEPALIVE_SECONDS:
                return connection
            connection.close()
        return None

    async def _connect(self, key) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout or None):  # 0: no limit
                _transport, connection = await loop.create_connection(
                    lambda: _Connection(self, key), key[0], key[1]
                )
        except TimeoutError as error:
            timeout = TimeoutError(f"no answer within {self.connect_timeout:g} s")
            raise ConnectFailed(timeout) from error
        except OSError as error:
            raise ConnectFailed(error) from error
        return connection

    def _release(self, connection: _Connection) -> None:
        if self.closed or not connection.reusable:
            connection.close()
            return
        connection.released = now = monotonic()
        idle = self.idle.setdefault(connection.key, collections.deque())
        idle.append(connection)
        # Reuse is newest first, so connections a burst left behind gather at the left end.
        while now - idle[0].released > KEEPALIVE_SECONDS:
            idle.popleft().close()

    async def close(self) -> None:
        self.closed = True
        for idle in self.idle.values():
            while idle:
                idle.pop().close()


class Response:
    """One reply: status and raw headers once `head` is done, then the body via `iter_any`."""

    __slots__ = (
        "buffered",
        "chunks",
        "connection",
        "done",
        "eof_delimited",
        "error",
        "finished",
        "head",
        "raw_headers",
        "received",
        "status",
        "waiter",
    )

    def __init__(self, connection: _Connection, loop):
        self.connection = connection
        self.head = loop.create_future()
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.waiter: asyncio.Future | None = None
        self.done = False  # the whole body is in
        self.error: BaseException | None = None
        self.received = 0
        self.finished = False  # released or closed by the relay
        self.eof_delimited = False

    @property
    def headers(self) -> _Headers:
        return _Headers(self.raw_headers)

    @property
    def content(self) -> Response:  # aiohttp's spelling: response.content.iter_any()
        return self

    async def iter_any(self):
        """The body as it arrives: whatever is buffered, joined, at each step."""
        chunks = self.chunks
        connection = self.connection
        while True:
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(_drain(chunks))
                self.buffered -= len(data)
                if connection.paused and self.buffered <= LOW_WATER:
                    connection.resume()
                yield data
                continue
            if self.error is not None:
                raise self.error
            if self.done:
                return
            self.waiter = connection.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_any()])

    def release(self) -> None:
        """After the whole body: the connection goes back to the pool."""
        if self.finished:
            return
        self.finished = True
        if self.done and self.error is None:
            self.connection.finish(self)
        else:
            self.connection.close()

    def close(self) -> None:
        """Give up on the reply: the connection is closed, so the upstream stops too."""
        if not self.finished:
            self.finished = True
            self.connection.close()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        self.error = error
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: a caller that gave up must not log it
        self._wake()


class _Headers:
    """What the relay asks of a reply's headers: one value by name, any case."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]):
        self.raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self.raw:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return default


def _drain(chunks: collections.deque):
    while chunks:
        yield chunks.popleft()


class _Connection(asyncio.Protocol):
    """One kept-alive connection; serves one response at a time."""

    def __init__(self, client: Client, key):
        self.client = client
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.reusable = False
        self.paused = False
        self.released = 0.0
        self.last_read = 0.0
        self.idle_timeout: float | None = None
        self.timer: asyncio.TimerHandle | None = None

    # --- the relay's side ---------------------------------------------------------------

    def send(self, data: bytes, body: bytes | None, idle_timeout: float | None) -> Response:
        self.reusable = False
        response = self.response = Response(self, self.loop)
        if self.transport is None or self.transport.is_closing():
            response._fail(Disconnected("the connection to the upstream was closed"))
            return response
        self.transport.write(data)
        if body and len(body) >= INLINE_BODY_BYTES:
            self.transport.write(body)  # a large body is not copied into the head's buffer
        self.idle_timeout = idle_timeout
        if idle_timeout:
            self.last_read = self.loop.time()
            self.timer = self.loop.call_at(self.last_read + idle_timeout, self._check_idle)
        return response

    def finish(self, response: Response) -> None:
        self._stop_timer()
        self.response = None
        self.client._release(self)

    def close(self) -> None:
        self._stop_timer()
        self.reusable = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check_idle(self) -> None:
        self.timer = None
        response = self.response
        if response is None or response.done or response.error is not None:
            return
        if self.paused:  # waiting on our client, not on the upstream
            self.last_read = self.loop.time()
        due = self.last_read + self.idle_timeout
        if self.loop.time() < due:
            self.timer = self.loop.call_at(due, self._check_idle)
            return
        response._fail(TimeoutError())
        self.close()

    # --- asyncio's side -----------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response.error is not None:  # bytes nobody asked for
            self.close()
            return
        response.received += len(data)
        if self.idle_timeout:
            self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            message = f"the upstream's reply could not be read: {error}"
            response._fail(Disconnected(message, response.received))
            self.close()

    def connection_lost(self, exc) -> None:
        self._stop_timer()
        self.reusable = False
        response = self.response
        if response is None or response.done or response.error is not None:
            return
        if response.eof_delimited and response.head.done():
            self._complete(response)
            return
        message = "the upstream closed the connection" + _reason(exc)
        response._fail(Disconnected(message, response.received))

    # --- httptools' callbacks -----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        response.status = self.parser.get_status_code()
        if 100 <= response.status < 200:  # an interim reply: the real one follows
            return
        names = {name.lower() for name, _ in response.raw_headers}
        response.eof_delimited = b"content-length" not in names and (
            b"transfer-encoding" not in names
        )
        response.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self.response
        response.chunks.append(body)
        response.buffered += len(body)
        if response.buffered > HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        response._wake()

    def on_message_complete(self) -> None:
        response = self.response
        if 100 <= response.status < 200:  # the parser goes on with the real reply
            response.raw_headers = []
            return
        self.reusable = self.parser.should_keep_alive()
        self._complete(response)

    def _complete(self, response: Response) -> None:
        self._stop_timer()
        response.done = True
        if not response.head.done():
            response.head.set_result(None)
        response._wake()


def _reason(exc: BaseException | None) -> str:
    return f" ({exc})" if exc else ""
