"""The recorder: exchanges in, Message rows out, off the request path and without losing any.

One writer task per process takes exchanges from a bounded queue and inserts them in batches
from one dedicated thread (so the ORM's blocking calls never run on the event loop). When the
database is down, locked or slow, a batch goes to an append-only spool of gzip JSONL files and is
replayed once the database answers again. A full queue spills to the spool too: a stream is
never blocked and a record is never silently dropped. Shutdown drains the queue. With
RECORDER_PACE, while it keeps up, the writer works in short pieces with rests between them
(proxy/pacing.py).

The writer also observes every exchange in the Prometheus metrics (proxy/metrics.py), from the
same fields that make the messages, including exchanges on routes not stored as messages.

Spool files are written whole and renamed into place, and claimed by renaming before replay,
so several worker processes can share one spool directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from . import (
    categories,
    consumers,
    conversations,
    costs,
    inserts,
    metrics,
    mirror,
    otel,
    pacing,
    privacy,
    ratelimit,
    rollups,
)
from .exchange import Exchange

log = logging.getLogger(__name__)

_STOP = object()
# The longest the event loop waits for the GIL while the writer thread runs Python (reading
# exchanges, masking, the statements' values): 1 ms instead of Python's 5 ms. bench/writer.py,
# the loop's p99 wake-up lateness beside the writer: 7.4-8.5 -> 4.2 ms on SQLite, 2.6-3.7 ->
# 2.0-2.9 ms on PostgreSQL (1.1 and 1.6 ms with no writer).
GIL_SWITCH_SECONDS = 0.001


class Recorder:
    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=settings.RECORDER_QUEUE_SIZE)
        self.spool_dir = Path(settings.RECORDER_SPOOL_DIR)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.batch_size = settings.RECORDER_BATCH_SIZE
        self.batch_window = settings.RECORDER_BATCH_WINDOW
        self.pace = settings.RECORDER_PACE
        self.hurry = asyncio.Event()  # set while someone waits for the queue to be written
        self.replay_checked = 0.0
        self.limited_connection = None
        self.retry_seconds = settings.RECORDER_RETRY_SECONDS
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        self.task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.database_down_since: float | None = None
        self.written = 0
        self.spooled = 0
        self.dropped = 0
        self.replayed = 0
        self.metrics = metrics.ExchangeMetrics()

    # --- the event-loop side ----------------------------------------------------------------

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        sys.setswitchinterval(GIL_SWITCH_SECONDS)  # for the whole process, once it writes
        self.task = self.loop.create_task(self._run(), name="recorder")

    def record(self, exchange: Exchange, *, store: bool = True) -> None:
        """Hand an exchange over; never waits. A full queue spills this record to the spool.

        Every exchange is counted in the metrics; only those with `store` become messages.
        """
        try:
            self.queue.put_nowait((exchange, store))
        except asyncio.QueueFull:
            # Rare (the writer is thousands of records behind); one small file write is
            # cheaper than holding the stream, and nothing is lost.
            row = exchange.to_fields()
            # Masked before the spool; with the rules already in memory (no query on the loop).
            conversations.fingerprint(row, exchange.headers)
            store = store and privacy.prepare(row, read_rules=False)
            self._observe([row])
            if store:
                self._spool([_spoolable(row)])

    async def stop(self) -> None:
        """Write everything still queued, then stop the writer thread."""
        if self.task is None:
            return
        self.hurry.set()
        await self.queue.put(_STOP)
        await self.task
        self.task = None
        await asyncio.get_running_loop().run_in_executor(self.executor, _close_connection)
        self.executor.shutdown(wait=True)

    async def flushed(self) -> None:
        """Wait until every exchange handed over so far has been written or spooled."""
        self.hurry.set()
        try:
            await self.queue.join()
        finally:
            self.hurry.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self._reclaim_orphans)
        await loop.run_in_executor(self.executor, self.metrics.refresh_database_size)
        stopping = False
        while not stopping:
            try:
                first = await asyncio.wait_for(self.queue.get(), timeout=self.retry_seconds)
            except TimeoutError:
                await loop.run_in_executor(self.executor, self._replay_if_due)
                continue
            if first is not _STOP and self.batch_window and not self.hurry.is_set():
                # Gather a few records per transaction: at low traffic a commit per request
                # costs more CPU than the request itself and holds the GIL against the streams
                # (bench/proxy.py: added p50 at 1 connection 0.84 -> 0.33 ms).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.hurry.wait(), self.batch_window)
            batch = [first]
            while len(batch) < self.batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            stopping = any(item is _STOP for item in batch)
            exchanges = [item for item in batch if item is not _STOP]
            paced = self._paced(batch)
            try:
                if exchanges:
                    await loop.run_in_executor(self.executor, self._write, exchanges, paced)
            except Exception:  # the writer must outlive any single bad batch
                log.exception("recorder: a batch of %d could not be written", len(exchanges))
                self._count_dropped(sum(1 for _, store in exchanges if store))
            finally:
                metrics.QUEUE_DEPTH.set(self.queue.qsize())
                for _ in batch:
                    self.queue.task_done()

    def _paced(self, batch: list) -> bool:
        """Whether the writer gives way to the streams while writing `batch` (proxy/pacing.py):
        while it keeps up (the batch is not full) and nobody waits for it (a flush, shutdown)."""
        return self.pace and len(batch) < self.batch_size and not self.hurry.is_set()

    # --- the writer thread ------------------------------------------------------------------

    def _write(self, batch: list[tuple[Exchange, bool]], paced: bool = False) -> None:
        with pacing.paced(paced):
            self._write_batch(batch)

    def _write_batch(self, batch: list[tuple[Exchange, bool]]) -> None:
        rows, observed = [], []
        for exchange, store in batch:
            pacing.breathe()
            try:
                row = exchange.to_fields()
            except Exception:
                log.exception("recorder: could not read exchange %s", exchange.request_id)
                if store:
                    self._count_dropped(1)
                continue
            # Hashes of the history as sent; then record level and masking, before anything
            # reads or keeps the text.
            conversations.fingerprint(row, exchange.headers)
            store = store and privacy.prepare(row)
            if exchange.rate_key is not None:
                ratelimit.spend(exchange.rate_key, row)
            _price_and_categorise(row, exchange.headers)
            observed.append(row)
            if store:
                rows.append(row)
        # After the rows are complete (cost included), before they are written or spooled.
        self._observe(observed)
        otel.export(observed)  # spans, sent by their own thread; never raises
        pacing.breathe()
        if not rows:
            return
        if self._database_resting():
            self._spool([_spoolable(row) for row in rows])
            return
        if self._insert(rows):
            self.written += len(rows)
            metrics.RECORDS_WRITTEN.inc(len(rows))
            consumers.publish(rows, self.loop)  # the live feed; never waits, never raises
            mirror.write(rows)  # never raises
            if time.monotonic() - self.replay_checked >= self.retry_seconds:
                self._replay_if_due()
        else:
            self._spool([_spoolable(row) for row in rows])

    def _database_resting(self) -> bool:
        """After a failure, leave the database alone for a while instead of waiting on it."""
        down = self.database_down_since
        return down is not None and time.monotonic() - down < self.retry_seconds

    def _insert(self, rows: list[dict], *, replay: bool = False) -> bool:
        try:
            connection.ensure_connection()
            if connection.connection is not self.limited_connection:
                _limit_wait(settings.RECORDER_DB_TIMEOUT)  # once per connection, not per batch
                self.limited_connection = connection.connection
            for row in rows:
                if "category" not in row or "cost_usd" not in row:  # spilled from a full queue
                    _price_and_categorise(row, None)
            pacing.breathe()
            with transaction.atomic():
                conversations.link(rows, replay=replay)  # trims the rows: before the insert
                pacing.breathe()
                # A replay may repeat rows a crashed replay already wrote; request_id is unique.
                new_rows = inserts.insert_messages(rows, ignore_conflicts=replay)
                # In the same transaction: a rollup counts exactly the messages that are there.
                rollups.add(new_rows)
        except DatabaseError as error:
            conversations.unlink(rows)  # spooled as they came
            if self.database_down_since is None:
                log.warning(
                    "recorder: database unavailable (%s); spooling to %s", error, self.spool_dir
                )
            self.database_down_since = time.monotonic()
            connection.close()  # a broken connection is reopened on the next try
            return False
        if self.database_down_since is not None:
            log.info("recorder: database is back")
        self.database_down_since = None
        return True

    def _spool(self, rows: list[dict]) -> None:
        name = f"spool-{os.getpid()}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.jsonl.gz"
        temporary = self.spool_dir / f".{name}.tmp"
        with gzip.open(temporary, "wt", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, separators=(",", ":")) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        temporary.rename(self.spool_dir / name)
        self.spooled += len(rows)
        metrics.RECORDS_SPOOLED.inc(len(rows))

    def _replay_if_due(self) -> None:
        if self._database_resting():
            return
        self.replay_checked = time.monotonic()
        self.metrics.refresh_database_size()
        for path in sorted(self.spool_dir.glob("spool-*.jsonl.gz")):
            claimed = path.with_name(f"{path.name}.claimed-{os.getpid()}")
            try:
                path.rename(claimed)  # atomic: another worker that renamed first owns the file
            except FileNotFoundError:
                continue
            if not self._replay(claimed):
                return

    def _replay(self, claimed: Path) -> bool:
        with gzip.open(claimed, "rt", encoding="utf-8") as handle:
            rows = [_from_spool(json.loads(line)) for line in handle if line.strip()]
        if not self._insert(rows, replay=True):
            original = claimed.name.rsplit(".claimed-", 1)[0]
            claimed.rename(claimed.with_name(original))
            return False
        mirror.write(rows)  # never raises
        claimed.unlink()
        self.replayed += len(rows)
        metrics.RECORDS_REPLAYED.inc(len(rows))
        log.info("recorder: replayed %d spooled messages from %s", len(rows), claimed.name)
        return True

    def _reclaim_orphans(self) -> None:
        """Put back files claimed by a worker that died during a replay."""
        for path in self.spool_dir.glob("spool-*.jsonl.gz.claimed-*"):
            pid = int(path.name.rsplit("-", 1)[1])
            if not _alive(pid):
                path.rename(path.with_name(path.name.rsplit(".claimed-", 1)[0]))

    def _observe(self, rows: list[dict]) -> None:
        for row in rows:
            pacing.breathe()
            try:
                self.metrics.observe(row)
            except Exception:  # a metric must never cost a record
                log.exception("recorder: could not observe exchange %s", row["request_id"])

    def _count_dropped(self, count: int) -> None:
        self.dropped += count
        metrics.RECORDS_DROPPED.inc(count)

    def pending_spool_files(self) -> int:
        return sum(1 for _ in self.spool_dir.glob("spool-*.jsonl.gz*"))


def _close_connection() -> None:
    connection.close()  # resolved in the writer thread, which owns this connection


def _price_and_categorise(row: dict, headers: dict[str, str] | None) -> None:
    """Set a row's cost and category; left unset when the price table or the rules cannot be
    read (the database is away), so a replay sets them later. Request headers are known only
    here, not on replay: header rules apply to messages written at once."""
    try:
        row["cost_usd"] = costs.current().cost_usd(row)
        row["category"] = categories.current().categorise(row, headers)
    except DatabaseError:
        pass
    except Exception:  # a rule must never cost a record
        log.exception("recorder: could not price or categorise %s", row["request_id"])
        row.setdefault("cost_usd", None)
        row.setdefault("category", "")


def _limit_wait(seconds: float) -> None:
    """Bound how long a batch waits on a locked or stuck database.

    Set per connection: the writer thread owns its connection.
    """
    milliseconds = int(seconds * 1000)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT set_config('statement_timeout', %s, false)", [str(milliseconds)])
        elif connection.vendor == "sqlite":
            cursor.execute(f"PRAGMA busy_timeout = {milliseconds:d}")


def _spoolable(row: dict) -> dict:
    return {
        **row,
        "request_id": str(row["request_id"]),
        "timestamp": row["timestamp"].isoformat(),
    }


def _from_spool(row: dict) -> dict:
    return {
        **row,
        "request_id": uuid.UUID(row["request_id"]),
        "timestamp": datetime.fromisoformat(row["timestamp"]),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
