"""Running the simulator: a background thread for tests, the foreground CLI for humans."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import threading
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from .app import build_app
from .config import SimulatorConfig
from .state import STATE_KEY, SimState


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=1024)
    sock.setblocking(False)
    return sock


async def _start_runner(
    app: web.Application, sock: socket.socket, *, access_log: bool
) -> web.AppRunner:
    # handler_cancellation: a vanished client cancels its handler (disconnect
    # detection); a short shutdown_timeout so stopping never waits on a stream.
    extra: dict[str, Any] = {} if access_log else {"access_log": None}
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, **extra)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


class RunningSimulator:
    """Run the simulator in a background thread with its own event loop.

    ``RunningSimulator()`` listens on a free port (``port=0``) unless a config
    or ``port=`` override says otherwise. Use as a context manager::

        with RunningSimulator(tokens_per_second=0, ttft=0) as sim:
            ollama.Client(host=sim.url).list()
            sim.wait_for(completed=1)
    """

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else SimulatorConfig(port=0)
        self.config = dataclasses.replace(base, **overrides)
        self.app: web.Application | None = None
        self.url = ""
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def state(self) -> SimState:
        assert self.app is not None, "simulator is not running"
        return self.app[STATE_KEY]

    def start(self) -> RunningSimulator:
        """Bind, start serving and return once requests are accepted."""
        sock = _bind(self.config.host, self.config.port)
        self.port = sock.getsockname()[1]
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        self.url = f"http://{host}:{self.port}"
        loop = asyncio.new_event_loop()
        self._loop = loop
        started: threading.Event = threading.Event()
        failure: list[BaseException] = []

        async def boot() -> None:
            self.app = build_app(self.config)
            self._runner = await _start_runner(self.app, sock, access_log=False)

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(boot())
            except BaseException as error:  # re-raised by start()
                failure.append(error)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            # Long-polls and similar stragglers: cancel so the loop closes cleanly.
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(
            target=run, name=f"ollama-simulator-{self.port}", daemon=True
        )
        self._thread.start()
        started.wait()
        if failure:
            sock.close()
            self._thread.join()
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving, cancel in-flight handlers and join the thread."""
        if self._thread is None or self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._runner = None

    def __enter__(self) -> RunningSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, coro: Awaitable[Any], timeout: float | None = None) -> Any:
        assert self._loop is not None, "simulator is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (see ``GET /_sim/stats``)."""

        async def snapshot() -> dict[str, Any]:
            return self.state.snapshot()

        return self._call(snapshot(), 5)

    def reset(self) -> None:
        """Zero the counters and forget recorded requests and loaded/pulled models."""

        async def reset() -> None:
            self.state.reset()

        self._call(reset(), 5)

    async def _wait(self, targets: dict[str, int], limit: float) -> dict[str, Any]:
        if not await self.state.wait_for(targets, limit):
            raise TimeoutError(
                f"simulator counters never reached {targets}: {self.state.snapshot()}"
            )
        return self.state.snapshot()

    def wait_for(self, *, timeout: float = 5.0, **counters: int) -> dict[str, Any]:
        """Block until the counters reach the values; returns stats or raises TimeoutError.

        Gauges (``in_flight``, ``active``, ``queued``) must be equal; the other
        counters at least the given value.
        """
        return self._call(self._wait(counters, timeout), timeout + 5)

    async def wait_for_async(
        self,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - same signature as wait_for
        **counters: int,
    ) -> dict[str, Any]:
        """:meth:`wait_for` for coroutines running on another event loop."""
        assert self._loop is not None, "simulator is not running"
        future = asyncio.run_coroutine_threadsafe(self._wait(counters, timeout), self._loop)
        return await asyncio.wrap_future(future)


async def _serve_forever(config: SimulatorConfig) -> None:
    sock = _bind(config.host, config.port)
    runner = await _start_runner(build_app(config), sock, access_log=True)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"Simulated Ollama {config.version} listening on http://{shown}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(config: SimulatorConfig) -> None:
    """Serve in the foreground until SIGINT/SIGTERM."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(config))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator options (shared by the CLI and the management command)."""
    defaults = SimulatorConfig()
    parser.add_argument("--host", default=defaults.host, help="bind address (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=defaults.port, help="port, 0 = any free (default %(default)s)"
    )
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=defaults.tokens_per_second,
        help="generation pace, 0 = as fast as possible (default %(default)s)",
    )
    parser.add_argument(
        "--ttft",
        type=float,
        default=defaults.ttft,
        help="seconds before the first byte (default %(default)s)",
    )
    parser.add_argument(
        "--default-tokens",
        type=int,
        default=defaults.default_tokens,
        help="answer length (default %(default)s)",
    )
    parser.add_argument(
        "--max-parallel",
        type=int,
        default=defaults.max_parallel,
        help="generation slots, 0 = unlimited",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="waiting requests before 503 (default %(default)s)",
    )
    parser.add_argument(
        "--ollama-version", default=defaults.version, help="reported by /api/version"
    )
    parser.add_argument(
        "--models", default=None, help="comma-separated installed models (default: all built-in)"
    )
    parser.add_argument(
        "--openai-only",
        action="store_true",
        help="act as a hosted OpenAI-compatible API: serve /v1/* only",
    )
    parser.add_argument(
        "--api-key", default="", help="require 'Authorization: Bearer KEY' on /v1/*"
    )


def config_from_options(options: dict[str, Any] | argparse.Namespace) -> SimulatorConfig:
    """Build a config from parsed :func:`add_arguments` options."""
    values = vars(options) if isinstance(options, argparse.Namespace) else options
    models = values.get("models")
    return SimulatorConfig(
        host=values["host"],
        port=values["port"],
        tokens_per_second=values["tokens_per_second"],
        ttft=values["ttft"],
        default_tokens=values["default_tokens"],
        max_parallel=values["max_parallel"],
        max_queue=values["max_queue"],
        version=values["ollama_version"],
        models=tuple(m.strip() for m in models.split(",") if m.strip())
        if models is not None
        else None,
        openai_only=values.get("openai_only", False),
        api_key=values.get("api_key", ""),
    )


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: ``python -m proxy.simulator --port 11434``."""
    parser = argparse.ArgumentParser(
        prog="python -m proxy.simulator", description="Simulated Ollama server"
    )
    add_arguments(parser)
    config = config_from_options(parser.parse_args(argv))
    try:
        for name in config.models or ():
            SimState.builtin(name)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    serve(config)
