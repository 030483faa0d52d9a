"""Serving the ASGI application from inside a Python process (the demo command and the tests)."""

from __future__ import annotations

import asyncio
import socket
import threading

import uvicorn


class ThreadedServer:
    """`ollama_monitor.asgi:application` under uvicorn in a background thread, on a real port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        from ollama_monitor.asgi import application, forwarder

        self.forwarder = forwarder
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            application,
            lifespan="on",
            log_level="warning",
            http="httptools",
            loop="asyncio",
            server_header=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def start(self) -> ThreadedServer:
        self.thread.start()
        ready = threading.Event()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start; see the log above")
            ready.wait(0.005)
        return self

    def flush(self, timeout: float = 30) -> None:
        """Wait until the requests being relayed are recorded, and the records written or
        spooled (a client may have read its whole answer before the proxy saw the end)."""
        drained = self.forwarder.drained()
        asyncio.run_coroutine_threadsafe(drained, self.forwarder.loop).result(timeout)

    def stop(self) -> None:
        """Shut down as on SIGTERM: finish the open requests, then flush the recorder."""
        if self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(timeout=60)
        self.socket.close()
