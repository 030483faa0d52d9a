"""The lean HTTP/1.1 client (proxy/http1.py) against hand-written upstreams on loopback, and
through the proxy: what it sends, the reply shapes it reads, keep-alive, a connection the
upstream closed while pooled, back-pressure, the idle timeout and giving up mid-reply."""

import asyncio
import threading

import httpx
import pytest
import uvloop

from proxy import http1

pytestmark = pytest.mark.django_db(transaction=True)

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"


class Upstream:
    """A loopback server answering each request with `reply(request, count)`: bytes to send,
    or None to close the connection without a word."""

    def __init__(self, reply):
        self.reply = reply
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = asyncio.Event()
        self.server = None
        self.handlers: set[asyncio.Task] = set()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        for handler in self.handlers:
            handler.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def _serve(self, reader, writer):
        self.connections += 1
        self.handlers.add(asyncio.current_task())
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(request)
                answer = self.reply(request, len(self.requests))
                if answer is None:
                    break
                if callable(answer):
                    await answer(writer)
                else:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            writer.close()


def client(**overrides) -> http1.Client:
    return http1.Client(**{"connect_timeout": 2.0, "idle_timeout": 5.0, **overrides})


def run(coroutine):
    return uvloop.run(coroutine)


def test_request_bytes_and_keep_alive():
    async def scenario():
        body = b'{"ok":true}'
        reply = OK + b"Content-Length: %d\r\n\r\n" % len(body) + body
        async with Upstream(lambda request, n: reply) as upstream:
            lean = client()
            for _ in range(3):
                response = await lean.request(
                    "POST", "127.0.0.1", upstream.port, "/api/chat?x=1", [("x-a", "b")], b"{}"
                )
                assert response.status == 200
                assert response.headers.get("content-type") == "application/json; charset=utf-8"
                assert await response.read() == body
                response.release()
            await lean.close()
            return upstream

    upstream = run(scenario())
    assert upstream.connections == 1  # one kept-alive connection for the three
    first = upstream.requests[0]
    assert first.startswith(b"POST /api/chat?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{upstream.port}\r\n".encode() in first
    assert b"x-a: b\r\n" in first and b"Content-Length: 2\r\n" in first
    assert first.endswith(b"\r\n\r\n{}")


def test_chunked_and_eof_delimited_replies():
    chunked = OK + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"

    async def scenario():
        results = []
        for reply in (chunked, until_close):

            async def answer(writer, reply=reply):
                writer.write(reply)
                await writer.drain()
                if b"Connection: close" in reply:
                    writer.close()

            async with Upstream(lambda request, n, answer=answer: answer) as upstream:
                lean = client()
                response = await lean.request("GET", "127.0.0.1", upstream.port, "/", [], None)
                results.append(await response.read())
                response.release()
                await lean.close()
        return results

    assert run(scenario()) == [b"hello world", b"all of it"]


def test_a_pooled_connection_the_upstream_dropped_is_replaced():
    """The upstream reads the second request on the kept-alive connection and closes it
    without a word (as a restarting Ollama does): sent again on a new connection."""
    reply = OK + b"Content-Length: 2\r\n\r\nok"

    async def scenario():
        async with Upstream(lambda request, n: None if n == 2 else reply) as upstream:
            lean = client()
            for _ in range(2):
                response = await lean.request("GET", "127.0.0.1", upstream.port, "/", [], None)
                assert await response.read() == b"ok"
                response.release()
            await lean.close()
            return upstream

    upstream = run(scenario())
    assert upstream.connections == 2 and len(upstream.requests) == 3


def test_connect_failure_and_idle_timeout():
    async def scenario():
        lean = client(idle_timeout=0.3)
        async with Upstream(lambda request, n: None) as gone:
            port = gone.port
        with pytest.raises(http1.ConnectFailed) as refused:
            await lean.request("GET", "127.0.0.1", port, "/", [], None)

        async def stall(writer):
            writer.write(OK + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
            await writer.drain()
            await asyncio.sleep(3)

        async with Upstream(lambda request, n: stall) as upstream:
            response = await lean.request("GET", "127.0.0.1", upstream.port, "/", [], None)
            started = asyncio.get_running_loop().time()
            chunks = []
            with pytest.raises(TimeoutError):
                async for chunk in response.iter_any():
                    chunks.append(chunk)
            waited = asyncio.get_running_loop().time() - started
            response.close()
        await lean.close()
        return refused.value, chunks, waited

    refused, chunks, waited = run(scenario())
    assert isinstance(refused.os_error, ConnectionRefusedError)
    assert chunks == [b"hi"]
    assert 0.2 < waited < 2


def test_back_pressure_and_giving_up_closes_the_connection():
    """A reply far larger than the high-water mark, read by nobody: the client stops reading
    (its buffer stays bounded); closing the reply closes the connection upstream."""
    size = 8 * 1024 * 1024

    async def flood(writer):
        writer.write(OK + b"Content-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()

    async def scenario():
        async with Upstream(lambda request, n: flood) as upstream:
            lean = client()
            response = await lean.request("GET", "127.0.0.1", upstream.port, "/", [], None)
            await asyncio.sleep(0.5)
            buffered = response.buffered
            paused = response.connection.paused
            first = await anext(response.iter_any())
            response.close()
            await asyncio.wait_for(upstream.closed.wait(), 5)
            await lean.close()
            return buffered, paused, len(first)

    buffered, paused, first = run(scenario())
    assert paused
    assert http1.HIGH_WATER < buffered < http1.HIGH_WATER + 1024 * 1024
    assert first == buffered


def test_the_proxy_resends_on_a_kept_alive_connection_the_upstream_dropped(start_proxy, settings):
    """Through the proxy: the upstream drops its kept-alive connection on reading the second
    request (a restart, its own idle timeout). The request is sent again on a new connection
    and answered, not cut with a 502; aiohttp's pool gave "lost the connection" here."""
    reply = b'{"model":"llama3.2","response":"Hi","done":true}'
    answer = OK + b"Content-Length: %d\r\n\r\n" % len(reply) + reply
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    upstream = Upstream(lambda request, n: None if n == 2 else answer)
    asyncio.run_coroutine_threadsafe(upstream.__aenter__(), loop).result(5)
    try:
        settings.OLLAMA_URL = f"http://127.0.0.1:{upstream.port}"
        proxy = start_proxy()
        body = {"model": "llama3.2", "prompt": "Hi", "stream": False}
        replies = [httpx.post(f"{proxy.url}/api/generate", json=body) for _ in range(2)]
    finally:
        asyncio.run_coroutine_threadsafe(upstream.__aexit__(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    assert [reply.status_code for reply in replies] == [200, 200], replies[1].text
    assert replies[1].content == reply
    assert upstream.connections == 2 and len(upstream.requests) == 3
