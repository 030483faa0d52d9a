"""Per-request test steering read from the ``X-Sim-*`` request headers."""

from __future__ import annotations

import asyncio
import math
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import web

from .config import SimulatorConfig
from .errors import RUNNER_CRASH_MESSAGE, RUNNER_MESSAGES, ApiError


@dataclass
class Knobs:
    """Test steering read from ``X-Sim-*`` request headers."""

    tokens: int | None
    tps: float
    ttft: float
    fail: str | None
    split_utf8: bool
    text: str | None

    @classmethod
    def from_request(cls, request: web.Request, config: SimulatorConfig) -> Knobs:
        headers = request.headers

        def number(name: str, default: float, cast: Callable[[str], float]) -> float:
            raw = headers.get(name)
            if raw is None:
                return default
            try:
                value = cast(raw.strip())
            except ValueError:
                raise ApiError(400, f"invalid {name} header: {raw!r}") from None
            if value < 0 or math.isnan(value):
                raise ApiError(400, f"invalid {name} header: {raw!r}")
            return value

        tokens = headers.get("X-Sim-Tokens")
        text = headers.get("X-Sim-Text")
        fail = headers.get("X-Sim-Fail")
        return cls(
            tokens=int(number("X-Sim-Tokens", 0, int)) if tokens is not None else None,
            tps=number("X-Sim-TPS", config.tokens_per_second, float),
            ttft=number("X-Sim-TTFT", config.ttft, float),
            fail=fail.strip().lower() if fail else None,
            split_utf8=headers.get("X-Sim-Split-UTF8", "").strip().lower() in ("1", "true", "yes"),
            text=urllib.parse.unquote(text) if text is not None else None,
        )

    async def load_delay(self) -> None:
        if self.ttft > 0:
            await asyncio.sleep(self.ttft)

    def failure_before_output(self, *, streaming: bool) -> ApiError | None:
        """The error a numeric ``X-Sim-Fail`` asks for, raised after loading."""
        if not self.fail or not self.fail.isdigit():
            return None
        status = int(self.fail)
        if status == 500:
            return ApiError(500, RUNNER_CRASH_MESSAGE)
        try:
            default = HTTPStatus(status).phrase.lower()
        except ValueError:
            default = "simulated error"
        return ApiError(status, RUNNER_MESSAGES.get(status, default), from_stream=streaming)
