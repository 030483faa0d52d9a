"""The proxy keys a worker knows, kept in memory so a request never waits for the database.

Each worker reads every key (hash, owner, flags) every `PROXY_KEY_REFRESH_SECONDS` in its own
thread, and once more on demand when a request presents an unknown key of ours, at most once a
second, so a key created a moment ago works at once while a flood of made-up keys costs one
small query a second. Revocations reach every worker within the refresh interval. Use is noted
in memory and written as `last_used_at` at the next refresh, at most once a minute per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection

from .models import ProxyKey, key_digest

log = logging.getLogger(__name__)

MISS_REFRESH_SECONDS = 1.0
MISS_WAIT_SECONDS = 0.5
LAST_USED_PRECISION_SECONDS = 60.0
# Longer bearer values are not keys of ours (ours are 47 characters): not worth a hash.
MAX_KEY_CHARS = 100
FIELDS = ("id", "prefix", "key_hash", "is_admin", "revoked", "user__username", "user__is_active")


@dataclass(frozen=True, slots=True)
class KnownKey:
    id: int
    prefix: str
    username: str
    is_admin: bool
    valid: bool  # not revoked, and its owner's account is active


class KeyRing:
    def __init__(self, refresh_seconds: float, on_change=None):
        self.refresh_seconds = refresh_seconds
        self.on_change = on_change
        self.by_hash: dict[str, KnownKey] = {}
        self.loaded = False
        self.used: dict[int, float] = {}
        self.written: dict[int, float] = {}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proxy-keys")
        self.pending: asyncio.Future | None = None
        self.task: asyncio.Task | None = None
        self.last_miss_refresh = float("-inf")
        self.failing = False

    async def start(self) -> None:
        await self.refresh()
        self.task = asyncio.get_running_loop().create_task(self._run(), name="proxy-keys")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.pending is not None:
            with contextlib.suppress(Exception):
                await self.pending
        used, self.used = self.used, {}
        await asyncio.get_running_loop().run_in_executor(self.executor, self._close, used)
        self.executor.shutdown(wait=True)

    def get(self, secret: str) -> KnownKey | None:
        """The key `secret` is, as last read; None when unknown. Notes the use of a valid key."""
        if len(secret) > MAX_KEY_CHARS:
            return None
        known = self.by_hash.get(key_digest(secret))
        if known is not None and known.valid:
            self.used[known.id] = time.time()
        return known

    async def get_fresh(self, secret: str) -> KnownKey | None:
        """Like `get`, reading the keys again first unless that was done less than a second
        ago (a key created since the last refresh). A database slower than MISS_WAIT_SECONDS
        (locked, away) leaves the key unknown rather than holding the request."""
        now = time.monotonic()
        if len(secret) <= MAX_KEY_CHARS and now - self.last_miss_refresh >= MISS_REFRESH_SECONDS:
            self.last_miss_refresh = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.refresh(), MISS_WAIT_SECONDS)
        return self.get(secret)

    async def refresh(self) -> None:
        """Read the keys again in the key thread; concurrent callers share one read."""
        if self.pending is None:
            used, self.used = self.used, {}
            loop = asyncio.get_running_loop()
            self.pending = loop.run_in_executor(self.executor, self._read, used)
            self.pending.add_done_callback(self._loaded)
        await asyncio.shield(self.pending)

    def _loaded(self, future: asyncio.Future) -> None:
        self.pending = None
        keys = None if future.cancelled() or future.exception() else future.result()
        if keys is None:
            return
        self.by_hash = keys
        self.loaded = True
        if self.on_change is not None:
            self.on_change(self)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self.refresh()

    # --- the key thread ---------------------------------------------------------------------

    def _read(self, used: dict[int, float]) -> dict[str, KnownKey] | None:
        try:
            self._write_last_used(used)
            rows = ProxyKey.objects.values_list(*FIELDS)
            # Revoked keys and keys of inactive users are known too: refused, never passed on.
            keys = {
                key_hash: KnownKey(key_id, prefix, username, is_admin, active and not revoked)
                for key_id, prefix, key_hash, is_admin, revoked, username, active in rows
            }
        except Exception as error:
            if not self.failing:
                log.warning("proxy keys: cannot read the keys (%s); keeping the last ones", error)
            self.failing = True
            connection.close()  # reopened on the next try
            return None
        if self.failing:
            log.info("proxy keys: reading the keys again")
        self.failing = False
        return keys

    def _write_last_used(self, used: dict[int, float]) -> None:
        for key_id, when in used.items():
            if when - self.written.get(key_id, 0.0) >= LAST_USED_PRECISION_SECONDS:
                ProxyKey.objects.filter(pk=key_id).update(
                    last_used_at=datetime.fromtimestamp(when, UTC)
                )
                self.written[key_id] = when

    def _close(self, used: dict[int, float]) -> None:
        with contextlib.suppress(Exception):
            self._write_last_used(used)
        connection.close()  # this thread's own connection
