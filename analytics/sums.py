"""The SQL of the sums aggregations read: rollup rows of whole buckets, and messages (the
seconds at the edges of a range, or every match when a criterion has no rollup column).

Each breakdown is one statement: a SELECT per source, each grouped by the breakdown's keys,
joined by UNION ALL and summed again by the same keys (a source can be subtracted). The
statement is written as text from the column names rather than through the ORM: Django took
up to 7 ms to compile one query of the 61 rollup sums and 13 ms for one over messages with its
50 histogram counts, and a 7-day range at odd seconds made 15 such queries, one round trip
each. The messages part wraps the SQL Django compiles for the filtered messages (a plain
WHERE, cheap to compile), so every criterion (search, ranges) applies as in the list. Values
are parameters; the only text put into the SQL is column names, the interval's integer seconds
and the histogram bounds, all constants of the code.
"""

from __future__ import annotations

import functools

from django.core.exceptions import EmptyResultSet
from django.db import connection

from proxy.models import HISTOGRAM_BOUNDS, LATENCY_BUCKETS, TTFT_BUCKETS

# Sums of floating-point columns; the others count or add integers.
FLOAT_SUMS = frozenset({"cost_usd", "latency_seconds", "ttft_seconds", "generation_seconds"})
_RATED = "m.tokens_per_second > 0 AND m.output_tokens IS NOT NULL"


def _histogram(column: str, names: tuple[str, ...]) -> dict[str, str]:
    """Per bucket, the count of messages whose `column` lies in it (lower bound excluded,
    upper included, as `proxy.models.histogram_index` places them)."""
    counts = {}
    lower = None
    for name, upper in zip(names, (*HISTOGRAM_BOUNDS, None), strict=True):
        within = [f"m.{column} IS NOT NULL"]
        if lower is not None:
            within.append(f"m.{column} > {lower!r}")
        if upper is not None:
            within.append(f"m.{column} <= {upper!r}")
        counts[name] = f"COUNT(CASE WHEN {' AND '.join(within)} THEN 1 END)"
        lower = upper
    return counts


# What each rollup sum is over messages (alias `m`): the writer's `proxy.rollups.sums` in SQL.
MESSAGE_MEASURES = {
    "messages": "COUNT(*)",
    "input_tokens": "SUM(m.input_tokens)",
    "input_token_messages": "COUNT(m.input_tokens)",
    "output_tokens": "SUM(m.output_tokens)",
    "output_token_messages": "COUNT(m.output_tokens)",
    "cost_usd": "SUM(m.cost_usd)",
    "latency_seconds": "SUM(m.latency_seconds)",
    "ttft_messages": "COUNT(m.ttft_seconds)",
    "ttft_seconds": "SUM(m.ttft_seconds)",
    "generated_tokens": f"SUM(CASE WHEN {_RATED} THEN m.output_tokens END)",
    "generation_seconds": (
        f"SUM(CASE WHEN {_RATED} THEN m.output_tokens * 1.0 / m.tokens_per_second END)"
    ),
    **_histogram("latency_seconds", LATENCY_BUCKETS),
    **_histogram("ttft_seconds", TTFT_BUCKETS),
}


def epoch_seconds(column: str) -> str:
    """Whole seconds since 1970 (UTC) of a datetime column, on this database."""
    if connection.vendor == "postgresql":
        return f"CAST(FLOOR(EXTRACT(EPOCH FROM {column})) AS BIGINT)"
    # Stored as "YYYY-MM-DD HH:MM:SS[.ffffff]" in UTC; %% is a literal % in a query.
    return f"CAST(strftime('%%s', {column}) AS INTEGER)"


def time_bucket(epoch: str, interval: int, offset: int = 0) -> str:
    """An epoch-seconds expression floored to `interval` seconds, counted from `offset`."""
    return f"({epoch} - ({epoch} - {int(offset)}) %% {int(interval)})"


class Sums:
    """One statement summing `sums` per `keys` (names) over several sources."""

    def __init__(self, keys: tuple[str, ...], sums: tuple[str, ...]):
        self.keys = keys
        self.sums = sums
        self.parts: list[str] = []
        self.params: list = []

    def rollups(self, model, span, dimensions: dict, expressions: dict | None = None, *, sign=1):
        """The rows of one (bucket_seconds, start, end) span of a rollup table (start
        included, end excluded, either None for open) that have the `dimensions` values,
        added (`sign` 1) or subtracted (-1). `expressions`: SQL over the table's columns for
        keys that are not columns."""
        quote = connection.ops.quote_name
        seconds, start, end = span
        expressions = expressions or {}
        keys = [f"{expressions.get(key, quote(key))} AS {quote(key)}" for key in self.keys]
        where = [f"{quote('bucket_seconds')} = %s"]
        self.params.append(seconds)
        # An index that starts with (bucket_seconds, bucket_start) serves the range.
        if start is not None:
            where.append(f"{quote('bucket_start')} >= %s")
            self.params.append(start)
        if end is not None:
            where.append(f"{quote('bucket_start')} < %s")
            self.params.append(end)
        for name, value in dimensions.items():
            where.append(f"{quote(name)} = %s")
            self.params.append(value)
        self.parts.append(
            f"SELECT {', '.join(keys)}, {_rollup_sums(self.sums, sign)} "
            f"FROM {quote(model._meta.db_table)} WHERE {' AND '.join(where)} "
            f"GROUP BY {self._positions()}"
        )

    def messages(self, queryset, expressions: dict | None = None, *, sign=1):
        """The messages of a queryset (any filter), added (`sign` 1) or subtracted (-1).
        `expressions`: SQL over the message (alias `m`) for keys that are not columns."""
        quote = connection.ops.quote_name
        expressions = expressions or {}
        columns = set(self.keys) - set(expressions)
        columns |= {"timestamp", "latency_seconds", "ttft_seconds", "tokens_per_second"}
        columns |= {"input_tokens", "output_tokens", "cost_usd"}
        try:
            inner, params = queryset.order_by().values(*sorted(columns)).query.sql_with_params()
        except EmptyResultSet:  # a criterion no message can meet
            return
        keys = [f"{expressions.get(key, f'm.{quote(key)}')} AS {quote(key)}" for key in self.keys]
        self.parts.append(
            f"SELECT {', '.join(keys)}, {_message_sums(self.sums, sign)} FROM ({inner}) m "
            f"GROUP BY {self._positions()}"
        )
        self.params.extend(params)

    def read(self) -> dict[tuple, dict]:
        """{key values: {sum name: total}}, zero for a sum with no values; a group whose
        messages were all subtracted again is left out."""
        if not self.parts:
            return {}
        quote = connection.ops.quote_name
        keys = [f"u.{quote(key)}" for key in self.keys]
        sql = (
            f"SELECT {', '.join(keys)}, {_totals(self.sums)} "
            f"FROM ({' UNION ALL '.join(self.parts)}) u GROUP BY {self._positions()} "
            f"HAVING SUM(u.{quote('messages')}) <> 0"
        )
        width = len(self.keys)
        with connection.cursor() as cursor:
            cursor.execute(sql, self.params)
            return {
                row[:width]: dict(zip(self.sums, row[width:], strict=True))
                for row in cursor.fetchall()
            }

    def _positions(self) -> str:
        return ", ".join(str(index) for index in range(1, len(self.keys) + 1))


# The lists of sums, written once per process and tuple of names.


@functools.cache
def _rollup_sums(sums: tuple[str, ...], sign: int) -> str:
    quote = connection.ops.quote_name
    minus = "-" if sign < 0 else ""
    return ", ".join(f"{minus}SUM({quote(name)}) AS {quote(name)}" for name in sums)


@functools.cache
def _message_sums(sums: tuple[str, ...], sign: int) -> str:
    quote = connection.ops.quote_name
    minus = "-" if sign < 0 else ""
    return ", ".join(f"{minus}{MESSAGE_MEASURES[name]} AS {quote(name)}" for name in sums)


@functools.cache
def _totals(sums: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    totals = []
    for name in sums:
        total = f"COALESCE(SUM(u.{quote(name)}), 0)"
        if name not in FLOAT_SUMS:  # PostgreSQL sums bigints as numeric
            total = f"CAST({total} AS BIGINT)"
        totals.append(total)
    return ", ".join(totals)
