"""Rate limits on the model routes, per proxy key, else per client IP.

- Requests per minute (`PROXY_RATE_LIMIT_RPM`): a counter per one-minute window, counted when a
  request is admitted. A fixed window lets a client burst up to twice the limit across a
  window's edge; it costs one cache call per request where a sliding log costs several.
- Tokens per day (`PROXY_RATE_LIMIT_TOKENS_PER_DAY`): the recorder's writer adds each message's
  input and output tokens once Ollama has reported them; a request is refused once the UTC
  day's count has reached the limit (so the request that crosses it still completes).

Counters live in the Django cache: Redis (REDIS_URL) shares them between workers and hosts;
without it each worker counts alone. When the cache fails, requests pass (logged once): the
limits protect capacity, not secrets, and Ollama should not go down with Redis.
"""

from __future__ import annotations

import logging
import math
import time

from django.core.cache import cache

log = logging.getLogger(__name__)

DAY_SECONDS = 86400


class Limits:
    def __init__(self, requests_per_minute: int, tokens_per_day: int):
        self.requests_per_minute = requests_per_minute
        self.tokens_per_day = tokens_per_day

    async def check(self, identity: str) -> tuple[str, int] | None:
        """None when `identity` may go on; else the refusal's message and Retry-After seconds."""
        now = time.time()
        try:
            if self.tokens_per_day:
                day = int(now // DAY_SECONDS)
                used = await cache.aget(_tokens_key(identity, day), 0)
                if used >= self.tokens_per_day:
                    return (
                        f"{self.tokens_per_day} tokens per day used up",
                        math.ceil((day + 1) * DAY_SECONDS - now),
                    )
            if self.requests_per_minute:
                window = int(now // 60)
                key = f"proxy-rpm:{identity}:{window}"
                if await _increment(key) > self.requests_per_minute:
                    return (
                        f"more than {self.requests_per_minute} requests per minute",
                        max(1, math.ceil((window + 1) * 60 - now)),
                    )
        except Exception as error:
            _failed(error)
            return None
        _recovered()
        return None


_failing = False  # said once, until the cache answers again


def _failed(error: Exception) -> None:
    global _failing
    if not _failing:
        log.warning("rate limits: the cache is unavailable (%s); not limiting", error)
    _failing = True


def _recovered() -> None:
    global _failing
    _failing = False


async def _increment(key: str) -> int:
    try:
        return await cache.aincr(key)
    except ValueError:  # the window's first request
        # Twice the window: the key outlives every request that reads it.
        if await cache.aadd(key, 1, timeout=120):
            return 1
        return await cache.aincr(key)


def _tokens_key(identity: str, day: int) -> str:
    return f"proxy-tokens:{identity}:{day}"


def spend(identity: str, row: dict) -> None:
    """Count a message's tokens against its key or address (the writer thread)."""
    tokens = (row.get("input_tokens") or 0) + (row.get("output_tokens") or 0)
    if not tokens:
        return
    key = _tokens_key(identity, int(row["timestamp"].timestamp() // DAY_SECONDS))
    try:
        if not cache.add(key, tokens, timeout=2 * DAY_SECONDS):
            cache.incr(key, tokens)
    except ValueError:  # expired between the two calls
        cache.add(key, tokens, timeout=2 * DAY_SECONDS)
    except Exception as error:
        _failed(error)
