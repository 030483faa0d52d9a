"""Rollups: the sums dashboards read instead of scanning messages (DESIGN.md §4).

The writer calls `add()` in the transaction that inserts the messages, so a rollup never
counts a message that is not there, nor misses one that is. Rows are upserted with
`INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n`, the same statement on PostgreSQL
and SQLite; concurrent writers (several workers) add up instead of overwriting each other.
`rebuild()` recomputes a time range from the messages (after a price or rule change).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime

from django.db import connection, transaction
from django.db.models import Max, Min

from . import inserts, pacing
from .models import (
    ROLLUP_SUMS,
    USER_ROLLUP_SUMS,
    Message,
    MessageRollup,
    SeriesRollup,
    UserRollup,
    UserTotalRollup,
    histogram_index,
)

MESSAGE_KEYS = ("bucket_seconds", "bucket_start", "model", "status", "category", "endpoint")
USER_KEYS = ("bucket_seconds", "bucket_start", "user", "model", "status")
SERIES_KEYS = ("bucket_seconds", "bucket_start", "status")
USER_TOTAL_KEYS = ("bucket_seconds", "bucket_start", "user")
# The narrow tables' sums (those of a user rollup), taken from the wide ones' increments.
_SERIES_SUMS_AT = tuple(ROLLUP_SUMS.index(name) for name in USER_ROLLUP_SUMS)
_SERIES_KEYS_AT = tuple(MESSAGE_KEYS.index(name) for name in SERIES_KEYS)
_USER_TOTAL_KEYS_AT = tuple(USER_KEYS.index(name) for name in USER_TOTAL_KEYS)
# Where each histogram starts among a MessageRollup's sums.
_LATENCY_AT = ROLLUP_SUMS.index("latency_bucket_00")
_TTFT_AT = ROLLUP_SUMS.index("ttft_bucket_00")
# The message fields a rollup is made of.
FIELDS = (
    "timestamp",
    "model",
    "status",
    "category",
    "endpoint",
    "user",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_seconds",
    "ttft_seconds",
    "tokens_per_second",
)


def sums(rows: Iterable[dict]) -> tuple[dict, dict]:
    """The rollup increments of some messages' fields: {key: [sums]} for both tables."""
    messages: dict[tuple, list] = {}
    users: dict[tuple, list] = {}
    size = len(ROLLUP_SUMS)
    for row in rows:
        pacing.breathe()
        epoch = math.floor(row["timestamp"].timestamp())
        model = row.get("model") or ""
        dims = (model, row["status"], row.get("category") or "", row["endpoint"])
        input_tokens = row.get("input_tokens")
        output_tokens = row.get("output_tokens")
        cost = row.get("cost_usd") or 0.0
        latency = row["latency_seconds"]
        ttft = row.get("ttft_seconds")
        rate = row.get("tokens_per_second")
        rated = bool(rate and rate > 0 and output_tokens is not None)
        latency_at = _LATENCY_AT + histogram_index(latency)
        ttft_at = None if ttft is None else _TTFT_AT + histogram_index(ttft)
        for seconds in MessageRollup.RESOLUTIONS:
            key = (seconds, epoch - epoch % seconds, *dims)
            total = messages.get(key)
            if total is None:
                total = messages[key] = [0] * size
            total[0] += 1
            if input_tokens is not None:
                total[1] += input_tokens
                total[2] += 1
            if output_tokens is not None:
                total[3] += output_tokens
                total[4] += 1
            total[5] += cost
            total[6] += latency
            if ttft is not None:
                total[7] += 1
                total[8] += ttft
                total[ttft_at] += 1
            if rated:
                total[9] += output_tokens
                total[10] += output_tokens / rate
            total[latency_at] += 1
        user = row.get("user") or ""
        for seconds in UserRollup.RESOLUTIONS:
            key = (seconds, epoch - epoch % seconds, user, model, row["status"])
            total = users.get(key)
            if total is None:
                total = users[key] = [0, 0, 0, 0.0]
            total[0] += 1
            total[1] += input_tokens or 0
            total[2] += output_tokens or 0
            total[3] += cost
    return messages, users


def narrowed(totals: dict, keys_at: tuple, sums_at: tuple | None = None) -> dict:
    """The increments of a narrower table: `totals` regrouped by the key values at `keys_at`,
    the sums at `sums_at` (all of them when None) added up."""
    result: dict[tuple, list] = {}
    for key, values in totals.items():
        narrow = tuple(key[at] for at in keys_at)
        picked = values if sums_at is None else [values[at] for at in sums_at]
        total = result.get(narrow)
        if total is None:
            result[narrow] = list(picked)
        else:
            for index, value in enumerate(picked):
                total[index] += value
    return result


def add(rows: Iterable[dict]) -> None:
    """Add messages' fields to the rollups; call inside the transaction that inserts them.

    One statement per table for the whole batch (each key once in it), in the form of
    `proxy.inserts`: a batch of 64 messages makes ~150 rollup rows, and one upsert statement
    per row cost 2-3.5 ms of the writer's CPU per batch on PostgreSQL (bench/writer.py). The
    narrow tables' increments are regrouped from the wide ones' rather than summed again from
    the messages.
    """
    messages, users = sums(rows)
    with connection.cursor() as cursor:
        for model, keys, counters, totals in (
            (MessageRollup, MESSAGE_KEYS, ROLLUP_SUMS, messages),
            (UserRollup, USER_KEYS, USER_ROLLUP_SUMS, users),
            (
                SeriesRollup,
                SERIES_KEYS,
                USER_ROLLUP_SUMS,
                narrowed(messages, _SERIES_KEYS_AT, _SERIES_SUMS_AT),
            ),
            (
                UserTotalRollup,
                USER_TOTAL_KEYS,
                USER_ROLLUP_SUMS,
                narrowed(users, _USER_TOTAL_KEYS_AT),
            ),
        ):
            rollup_rows = [(*key, *values) for key, values in totals.items()]
            for _, (sql, params) in inserts.statements(
                model._meta.db_table,
                (*keys, *counters),
                rollup_rows,
                rollup_rows,
                tail=_upsert(model, keys, counters),
            ):
                cursor.execute(sql, params)


_clauses: dict[tuple, str] = {}


def _upsert(model, keys: tuple, counters: tuple) -> str:
    """The ON CONFLICT clause that adds a row's counters to the row already there."""
    cache_key = (model, connection.vendor)
    if cache_key not in _clauses:
        quote = connection.ops.quote_name
        table = quote(model._meta.db_table)
        updates = ", ".join(
            f"{quote(name)} = {table}.{quote(name)} + excluded.{quote(name)}" for name in counters
        )
        _clauses[cache_key] = (
            f" ON CONFLICT ({', '.join(quote(name) for name in keys)}) DO UPDATE SET {updates}"
        )
    return _clauses[cache_key]


def rebuild(start: datetime | None = None, end: datetime | None = None, batch: int = 5000):
    """Recompute the rollups of whole UTC days from the messages, one day per transaction.

    Covers the days from `start` to `end` (default: every day with messages). Safe beside a
    running writer: its upserts wait for the day's transaction, then add to the rebuilt rows.
    Yields each day done (epoch seconds) so a command can report progress.
    """
    found = Message.objects.aggregate(first=Min("timestamp"), last=Max("timestamp"))
    if found["first"] is None:
        return
    first = _day(max(start, found["first"]) if start else found["first"])
    last = _day(min(end, found["last"]) if end else found["last"])
    for day in range(first, last + 86400, 86400):
        with transaction.atomic():
            for model in (MessageRollup, UserRollup, SeriesRollup, UserTotalRollup):
                model.objects.filter(bucket_start__gte=day, bucket_start__lt=day + 86400).delete()
            day_messages = Message.objects.filter(
                timestamp__gte=datetime.fromtimestamp(day, UTC),
                timestamp__lt=datetime.fromtimestamp(day + 86400, UTC),
            )
            for rows in day_messages.in_batches(*FIELDS, size=batch):
                add(rows)
        yield day


def _day(moment: datetime) -> int:
    epoch = math.floor(moment.timestamp())
    return epoch - epoch % 86400
