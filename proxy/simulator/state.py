"""Everything mutable about one simulator: counters, recorded traffic, models, slots.

Also the ``/_sim/*`` endpoints that expose it (not part of Ollama), and the
typed keys under which the app and each request keep their data.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .catalogue import BUILTIN_BY_KEY, BUILTIN_MODELS, ModelName, ModelSpec
from .config import SimulatorConfig
from .errors import BUSY_MESSAGE, ApiError

RECORDED_BODY_LIMIT = 4 << 20


def _text_or_base64(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


MONOTONIC_COUNTERS = (
    "requests",
    "completed",
    "disconnects",
    "dropped",
    "rejected",
    "generated_tokens",
)
GAUGES = ("in_flight", "active", "queued")


class SimState:
    """Everything mutable about one simulator instance (lives on its event loop)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.counters = dict.fromkeys(MONOTONIC_COUNTERS + GAUGES, 0)
        self.last_request: dict[str, Any] | None = None
        self.last_response: bytes | None = None
        self.last_response_status: int | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=100)
        self.installed: dict[str, ModelSpec] = {}
        self.loaded: dict[str, tuple[ModelSpec, float]] = {}
        self._changed = asyncio.Event()
        self._waiters = 0
        self._slots = asyncio.Semaphore(config.max_parallel) if config.max_parallel > 0 else None
        self._install_configured()

    def _install_configured(self) -> None:
        self.installed.clear()
        names = self.config.models
        specs = BUILTIN_MODELS if names is None else [self.builtin(name) for name in names]
        for spec in specs:
            self.installed[spec.ref.key] = spec

    @staticmethod
    def builtin(name: str) -> ModelSpec:
        """The built-in model called ``name`` (ValueError if unknown)."""
        ref = ModelName.parse(name)
        spec = BUILTIN_BY_KEY.get(ref.key) if ref else None
        if spec is None:
            known = ", ".join(s.name for s in BUILTIN_MODELS)
            raise ValueError(f"unknown simulated model {name!r} (known: {known})")
        return spec

    # -- counters ---------------------------------------------------------

    def bump(self, name: str, delta: int = 1) -> None:
        self.counters[name] += delta
        if self._waiters:
            # Wake every long-poller; each re-checks its own condition.
            self._changed.set()
            self._changed = asyncio.Event()

    def snapshot(self) -> dict[str, Any]:
        stats: dict[str, Any] = dict(self.counters)
        stats["last_request"] = self.last_request
        stats["last_response"] = self.last_response
        stats["last_response_status"] = self.last_response_status
        return stats

    def reset(self) -> None:
        for name in MONOTONIC_COUNTERS:
            self.counters[name] = 0
        self.last_request = None
        self.last_response = None
        self.last_response_status = None
        self.recent.clear()
        self.loaded.clear()
        self._install_configured()
        self.bump("requests", 0)

    def reached(self, targets: dict[str, int]) -> bool:
        return all(
            self.counters[name] == value if name in GAUGES else self.counters[name] >= value
            for name, value in targets.items()
        )

    async def wait_for(self, targets: dict[str, int], limit: float) -> bool:
        """Wait until the counters reach ``targets``; False on timeout."""
        unknown = set(targets) - set(self.counters)
        if unknown:
            raise ValueError(f"unknown counters: {', '.join(sorted(unknown))}")
        deadline = asyncio.get_running_loop().time() + limit
        self._waiters += 1
        try:
            while not self.reached(targets):
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
            return True
        finally:
            self._waiters -= 1

    def record(self, request: web.Request, body: bytes) -> None:
        """Remember a request as ``last_request`` (body kept up to 4 MiB)."""
        text, encoding = _text_or_base64(body[:RECORDED_BODY_LIMIT])
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.last_request = {
            "method": request.method,
            "path": request.path,
            # Raw, still percent-encoded, so tests can check forwarding verbatim.
            "query": request.raw_path.partition("?")[2],
            "headers": headers,
            "body": text,
            "body_encoding": encoding,
            "body_length": len(body),
        }
        self.recent.append(self.last_request)

    # -- models -----------------------------------------------------------

    def find(self, name: str) -> ModelSpec | None:
        ref = ModelName.parse(name)
        return self.installed.get(ref.key) if ref else None

    def install(self, spec: ModelSpec) -> None:
        self.installed[spec.ref.key] = spec

    def mark_loaded(self, spec: ModelSpec, keep_alive: float | None) -> None:
        seconds = 300.0 if keep_alive is None else keep_alive
        if seconds == 0:
            self.loaded.pop(spec.ref.key, None)
            return
        # Go's "forever" is MaxInt64 ns (~292 years); cap to keep datetime happy.
        expires = time.time() + min(seconds, 292 * 365 * 86400)
        self.loaded[spec.ref.key] = (spec, expires)

    def unload(self, spec: ModelSpec) -> None:
        self.loaded.pop(spec.ref.key, None)

    def installed_newest_first(self) -> list[ModelSpec]:
        return sorted(self.installed.values(), key=lambda spec: spec.modified_ns, reverse=True)

    def running_longest_first(self) -> list[tuple[ModelSpec, float]]:
        """Loaded models and their expiry, forgetting the expired ones first."""
        now = time.time()
        for key, (_, expires) in list(self.loaded.items()):
            if expires <= now:
                del self.loaded[key]
        return sorted(self.loaded.values(), key=lambda item: item[1], reverse=True)

    # -- admission --------------------------------------------------------

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a generation slot; queue or reject (503) like Ollama's scheduler."""
        slots = self._slots
        if slots is not None:
            if slots.locked():
                if self.counters["queued"] >= self.config.max_queue:
                    self.bump("rejected")
                    raise ApiError(503, BUSY_MESSAGE)
                self.bump("queued")
                try:
                    await slots.acquire()
                finally:
                    self.bump("queued", -1)
            else:
                await slots.acquire()
        self.bump("active")
        try:
            yield
        finally:
            if slots is not None:
                slots.release()
            self.bump("active", -1)


STATE_KEY = web.AppKey("simulator_state", SimState)
BODY_KEY = web.RequestKey("simulator_body", bytes)
START_KEY = web.RequestKey("simulator_start_ns", int)
WRITTEN_KEY = web.RequestKey("simulator_written", bytearray)


def state_of(request: web.Request) -> SimState:
    return request.app[STATE_KEY]


# --------------------------------------------------------------------------
# The /_sim/* endpoints (not part of Ollama)
# --------------------------------------------------------------------------


def _stats_response(state: SimState, status: int = 200) -> web.Response:
    stats = state.snapshot()
    if stats["last_response"] is not None:
        text, encoding = _text_or_base64(stats["last_response"])
        stats["last_response"] = text
        stats["last_response_encoding"] = encoding
    return web.json_response(stats, status=status)


async def handle_sim_stats(request: web.Request) -> web.Response:
    """``GET /_sim/stats``."""
    return _stats_response(state_of(request))


async def handle_sim_requests(request: web.Request) -> web.Response:
    """``GET /_sim/requests``: recently recorded requests, oldest first."""
    return web.json_response(list(state_of(request).recent))


async def handle_sim_reset(request: web.Request) -> web.Response:
    """``POST /_sim/reset``."""
    state = state_of(request)
    state.reset()
    return _stats_response(state)


async def handle_sim_wait(request: web.Request) -> web.Response:
    """``GET /_sim/wait?counter=N&timeout=S``: long-poll for counters."""
    state = state_of(request)
    query = dict(request.query)
    try:
        timeout = float(query.pop("timeout", "5"))
        targets = {name: int(value) for name, value in query.items()}
        reached = await state.wait_for(targets, timeout)
    except ValueError as error:
        return web.json_response({"error": str(error)}, status=400)
    return _stats_response(state, 200 if reached else 408)
