"""Aggregations over recorded messages, read from rollups rather than messages (DESIGN.md §4).

A time range is cut into whole days, hours and minutes of rollup rows (each message counted in
exactly one of them) plus, at the two ends, the seconds no whole minute covers, which are
read from the messages (an index range scan of at most a minute each). Criteria that rollups
have no column for (search, user, token/latency/cost ranges) make the whole aggregation a
message scan; so does a category or endpoint criterion for the user figures (unique and top
users), whose rollups are kept per user, model and status only. The narrow rollups serve what
names none of their missing columns: the series per time and status (`SeriesRollup`), the user
figures per user alone (`UserTotalRollup`).

Percentiles are estimated from the rollups' fixed histogram buckets by linear interpolation
within the bucket that holds the rank: the true value always lies within that bucket, whose
bounds are returned with the estimate (`bounds`), so the error is at most the bucket's width.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection

from proxy.models import (
    HISTOGRAM_BOUNDS,
    LATENCY_BUCKETS,
    ROLLUP_SUMS,
    TTFT_BUCKETS,
    USER_ROLLUP_SUMS,
    Message,
    MessageRollup,
    SeriesRollup,
    UserRollup,
    UserTotalRollup,
    json_time,
)

from .filters import MessageFilter
from .scores import scores_by_model
from .sums import Sums, epoch_seconds, time_bucket

INTERVALS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400, "1w": 604800}
# Weeks start on Monday, UTC: 1970-01-05 was the first Monday after the epoch.
WEEK_OFFSET = 4 * 86400
# The most points one `messages_by_time` series may have.
MAX_POINTS = 5000
PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
DIMENSIONS = ("model", "status", "category", "endpoint")
SERIES_SUMS = ("messages", "input_tokens", "output_tokens", "cost_usd")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


class TooManyPoints(ValueError):
    pass


# --- cutting a time range ---------------------------------------------------------------------


@dataclass
class Plan:
    """Where the figures of a time range come from: rollup spans (sign, bucket seconds, start,
    end; epoch seconds, end excluded, None for open) and message edges (sign, start, end;
    microseconds since 1970, end excluded), each added (sign 1) or subtracted (sign -1)."""

    spans: list[tuple[int, int, int | None, int | None]] = field(default_factory=list)
    edges: list[tuple[int, int | None, int | None]] = field(default_factory=list)

    def edge_messages(self, messages):
        """(sign, messages) of each edge."""
        for sign, start, end in self.edges:
            queryset = messages
            if start is not None:
                queryset = queryset.filter(timestamp__gte=EPOCH + start * MICROSECOND)
            if end is not None:
                queryset = queryset.filter(timestamp__lt=EPOCH + end * MICROSECOND)
            yield sign, queryset


def plan(start: datetime | None, end: datetime | None, resolutions: tuple[int, ...]) -> Plan:
    """Cover [start, end] (both included, either open) with rollup buckets of the given
    resolutions and messages.

    Whole buckets of the coarsest resolution first; each bound then goes to the nearer edge of
    its bucket, inward (the rest of the bucket read at a finer resolution and added) or
    outward (the bucket taken whole, the part before or after the bound subtracted). A 7-day
    range starting 37 s after midnight reads 8 days of rows less 37 s of messages instead of
    23 hours, 59 minutes and 23 s at three resolutions besides (bench/analytics.py).
    """
    result = Plan()
    low = None if start is None else _micros(start)
    high = None if end is None else _micros(end) + 1
    sizes = [seconds * 1_000_000 for seconds in sorted(resolutions, reverse=True)]
    _cover(low, high, sizes, 1, result)
    return result


def _cover(low, high, sizes, sign, result: Plan) -> None:
    """Add `sign` x [low, high) (microseconds, either None for open) to the plan."""
    if low is not None and high is not None and low >= high:
        return
    if not sizes:
        result.edges.append((sign, low, high))
        return
    size, finer = sizes[0], sizes[1:]
    # Each bound's bucket edges, inward first: on a tie the inward one (nothing subtracted).
    lows = _bucket_edges(low, size, inward_is_up=True)
    highs = _bucket_edges(high, size, inward_is_up=False)
    # The choice that leaves the least to read finer; first, no bucket of this size at all.
    least = math.inf if low is None or high is None else high - low
    chosen = None
    for outer_low in lows:
        for outer_high in highs:
            if outer_low is not None and outer_high is not None and outer_low >= outer_high:
                continue
            rest = (0 if low is None else abs(outer_low - low)) + (
                0 if high is None else abs(outer_high - high)
            )
            if rest < least:
                least, chosen = rest, (outer_low, outer_high)
    if chosen is None:
        _cover(low, high, finer, sign, result)
        return
    outer_low, outer_high = chosen
    result.spans.append((sign, size // 1_000_000, _seconds(outer_low), _seconds(outer_high)))
    if low is not None:
        _cover(low, outer_low, finer, sign, result)
        _cover(outer_low, low, finer, -sign, result)
    if high is not None:
        _cover(outer_high, high, finer, sign, result)
        _cover(high, outer_high, finer, -sign, result)


def _bucket_edges(bound: int | None, size: int, *, inward_is_up: bool) -> list:
    if bound is None:
        return [None]
    down, up = bound // size * size, -(-bound // size) * size
    return list(dict.fromkeys([up, down] if inward_is_up else [down, up]))


def _seconds(micros: int | None) -> int | None:
    return None if micros is None else micros // 1_000_000


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def _moment(epoch_seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=epoch_seconds)


# --- reading ----------------------------------------------------------------------------------


class Aggregation:
    """The figures of the messages a filter matches."""

    def __init__(self, filters: MessageFilter):
        self.filters = filters
        self.scan = filters.needs_message_scan()
        # Every criterion but the time range: the time range is cut between sources.
        self.messages = filters.apply(times=False, whole=True)
        self.dimensions = {k: v for k, v in filters.dimensions().items() if v is not None}

    @property
    def source(self) -> str:
        return "messages" if self.scan else "rollups"

    def _grouped(
        self,
        keys,
        sums,
        resolutions,
        *,
        messages=None,
        rollups=lambda seconds: None,
        table=MessageRollup,
    ):
        """Sums per group key from rollups of `table` and edge messages (or messages alone
        when a criterion has no rollup column), in one statement. `messages` are SQL
        expressions for keys that are not message columns, `rollups(resolution)` those over
        rollup rows of that resolution."""
        start, end = self.filters.start_time, self.filters.end_time
        statement = Sums(keys, sums)
        if self.scan:
            statement.messages(self.messages.between(start, end), messages)
            return statement.read()
        cut = plan(start, end, resolutions)
        # A part per span: each reads one index range, grouped in index order when it can.
        for sign, seconds, low, high in cut.spans:
            span = (seconds, low, high)
            statement.rollups(table, span, self.dimensions, rollups(seconds), sign=sign)
        for sign, edge in cut.edge_messages(self.messages):
            statement.messages(edge, messages, sign=sign)
        return statement.read()

    def by_dimensions(self) -> dict:
        """Every sum per (model, status, category, endpoint)."""
        return self._grouped(DIMENSIONS, ROLLUP_SUMS, MessageRollup.RESOLUTIONS)

    def by_time(self, interval: str) -> list[dict]:
        seconds = INTERVALS[interval]
        offset = WEEK_OFFSET if interval == "1w" else 0
        first, last = self._series_range(seconds, offset)
        if first is None:
            return []
        points = (last - first) // seconds + 1
        if points > MAX_POINTS:
            raise TooManyPoints(
                f"interval {interval} over this range gives {points} points, at most "
                f"{MAX_POINTS}: choose a longer interval or a shorter range"
            )
        resolutions = tuple(r for r in MessageRollup.RESOLUTIONS if r <= seconds)
        quote = connection.ops.quote_name

        def rollup_time(resolution: int) -> dict:
            if resolution == seconds and not offset:
                # Rows of the interval's own resolution: grouped by the column itself, in
                # the order of the series index (31 to 14 ms for 30 days of hours, SQLite).
                return {"time": quote("bucket_start")}
            return {"time": time_bucket(quote("bucket_start"), seconds, offset)}

        grouped = self._grouped(
            ("time", "status"),
            SERIES_SUMS,
            resolutions,
            messages={"time": time_bucket(epoch_seconds("m.timestamp"), seconds, offset)},
            rollups=rollup_time,
            # Time and status only, unless a criterion names a column it lacks.
            table=SeriesRollup if self.dimensions.keys() <= {"status"} else MessageRollup,
        )
        series = {
            moment: {"messages": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0, "cost": 0}
            for moment in range(first, last + 1, seconds)
        }
        for (moment, status), sums in grouped.items():
            point = series.get(moment)
            if point is None:  # data outside the given range's buckets cannot occur; be safe
                continue
            point["messages"] += sums["messages"]
            point["errors"] += sums["messages"] if status == Message.Status.ERROR else 0
            point["input_tokens"] += sums["input_tokens"]
            point["output_tokens"] += sums["output_tokens"]
            point["cost"] += sums["cost_usd"]
        return [{"time": json_time(_moment(moment)), **point} for moment, point in series.items()]

    def _series_range(self, seconds: int, offset: int):
        start, end = self.filters.start_time, self.filters.end_time
        if start is None or end is None:
            known_first, known_last = MessageRollup.objects.filter(bucket_seconds=60).time_span()
            if known_first is None:
                return None, None
            first = known_first if start is None else _micros(start) // 1_000_000
            last = known_last if end is None else _micros(end) // 1_000_000
        else:
            first, last = _micros(start) // 1_000_000, _micros(end) // 1_000_000
        floor = lambda epoch: epoch - (epoch - offset) % seconds  # noqa: E731
        return floor(first), floor(last)

    def by_user(self) -> dict:
        """Sums per user (messages, tokens, cost)."""
        start, end = self.filters.start_time, self.filters.end_time
        beyond_user_rollups = self.dimensions.keys() - {"model", "status"}
        statement = Sums(("user",), USER_ROLLUP_SUMS)
        if self.scan or beyond_user_rollups:
            statement.messages(self.messages.between(start, end))
            return statement.read()
        # Per user alone unless a model or status is named.
        table = UserRollup if self.dimensions else UserTotalRollup
        cut = plan(start, end, table.RESOLUTIONS)
        for sign, seconds, low, high in cut.spans:
            statement.rollups(table, (seconds, low, high), self.dimensions, sign=sign)
        for sign, edge in cut.edge_messages(self.messages):
            statement.messages(edge, sign=sign)
        return statement.read()


# --- figures ----------------------------------------------------------------------------------


def percentiles(counts: list[int]) -> dict:
    """p50/p95/p99 estimated from histogram counts, each with the bounds it lies within."""
    total = sum(counts)
    result = dict.fromkeys(PERCENTILES)
    result["bounds"] = dict.fromkeys(PERCENTILES)
    if not total:
        return result
    for name, quantile in PERCENTILES.items():
        rank = quantile * total
        below = 0
        for index, count in enumerate(counts):
            if count and below + count >= rank:
                lower = HISTOGRAM_BOUNDS[index - 1] if index else 0.0
                upper = HISTOGRAM_BOUNDS[index] if index < len(HISTOGRAM_BOUNDS) else None
                if upper is None:  # beyond the last bound: only the lower bound is known
                    estimate = lower
                else:
                    estimate = lower + (upper - lower) * (rank - below) / count
                result[name] = round(estimate, 6)
                result["bounds"][name] = [lower, upper]
                break
            below += count
    return result


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else None


def _totals(groups) -> dict:
    """The sums of groups of sums (each in `ROLLUP_SUMS` order), added column by column in C:
    a loop per sum name took 5.7 ms of an aggregation of 30 days (213 groups), this 2.0."""
    totals = [sum(column) for column in zip(*(sums.values() for sums in groups), strict=True)]
    return dict(zip(ROLLUP_SUMS, totals or [0] * len(ROLLUP_SUMS), strict=True))


def _figures(sums: dict) -> dict:
    return {
        "messages": sums["messages"],
        "input_tokens": sums["input_tokens"],
        "output_tokens": sums["output_tokens"],
        "cost": sums["cost_usd"],
        "avg_latency": _ratio(sums["latency_seconds"], sums["messages"]),
    }


def _by(dimension: str, grouped: dict) -> dict:
    index = DIMENSIONS.index(dimension)
    per = {}
    for key, sums in grouped.items():
        per.setdefault(key[index], []).append(sums)
    return {value: _totals(groups) for value, groups in per.items()}


def _ranked(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda row: (-row["messages"], str(next(iter(row.values())))))


def model_figures(name: str, sums: dict) -> dict:
    latency = percentiles([sums[bucket] for bucket in LATENCY_BUCKETS])
    return {
        "model": name,
        **_figures(sums),
        "avg_input_tokens": _ratio(sums["input_tokens"], sums["input_token_messages"]),
        "avg_output_tokens": _ratio(sums["output_tokens"], sums["output_token_messages"]),
        "p50_latency": latency["p50"],
        "p95_latency": latency["p95"],
        "avg_ttft": _ratio(sums["ttft_seconds"], sums["ttft_messages"]),
        "tokens_per_second": _ratio(sums["generated_tokens"], sums["generation_seconds"]),
    }


def _cached_json(key: str, compute) -> bytes:
    """The JSON of `compute()`, kept in the cache for ANALYTICS_CACHE_SECONDS.

    Kept and served as encoded bytes: a hit costs no re-encoding, and a miss skips ninja's
    response validation (8 of the 80 ms of a 720-point series, bench/analytics.py); the
    shape is checked against the schema by the tests instead.
    """
    found = cache.get(key)
    if found is None:
        found = json.dumps(compute(), separators=(",", ":")).encode()
        cache.set(key, found, settings.ANALYTICS_CACHE_SECONDS)
    return found


def aggregations(filters: MessageFilter, interval: str = "1h", top_users: int = 10) -> bytes:
    """Everything /analytics/aggregations returns, as JSON (see `schemas.Aggregations`)."""
    key = f"analytics:aggregations:{filters.cache_key(interval, top_users)}"
    return _cached_json(key, lambda: _aggregations(filters, interval, top_users))


def _aggregations(filters: MessageFilter, interval: str, top_users: int) -> dict:
    aggregation = Aggregation(filters)
    series = aggregation.by_time(interval)
    grouped = aggregation.by_dimensions()
    users = aggregation.by_user()
    total = _totals(grouped.values())
    by_model = _by("model", grouped)
    latency = percentiles([total[bucket] for bucket in LATENCY_BUCKETS])
    ttft = percentiles([total[bucket] for bucket in TTFT_BUCKETS])
    return {
        "source": aggregation.source,
        "total_messages": total["messages"],
        "unique_users": len(users),
        "total_input_tokens": total["input_tokens"],
        "total_output_tokens": total["output_tokens"],
        "avg_input_tokens": _ratio(total["input_tokens"], total["input_token_messages"]),
        "avg_output_tokens": _ratio(total["output_tokens"], total["output_token_messages"]),
        "total_cost": total["cost_usd"],
        "avg_latency": _ratio(total["latency_seconds"], total["messages"]),
        "avg_ttft": _ratio(total["ttft_seconds"], total["ttft_messages"]),
        "latency_percentiles": latency,
        "ttft_percentiles": ttft,
        "interval": interval,
        "messages_by_time": series,
        "by_category": _ranked(
            [
                {"category": name, **_figures(sums)}
                for name, sums in _by("category", grouped).items()
            ]
        ),
        "by_model": _ranked([{"model": name, **_figures(sums)} for name, sums in by_model.items()]),
        "by_status": _ranked(
            [{"status": name, **_figures(sums)} for name, sums in _by("status", grouped).items()]
        ),
        "by_endpoint": _ranked(
            [
                {"endpoint": name, **_figures(sums)}
                for name, sums in _by("endpoint", grouped).items()
            ]
        ),
        "tokens_per_second_by_model": _ranked(
            [
                {
                    "model": name,
                    "messages": sums["messages"],
                    "tokens_per_second": _ratio(
                        sums["generated_tokens"], sums["generation_seconds"]
                    ),
                }
                for name, sums in by_model.items()
            ]
        ),
        "top_users": _ranked(
            [
                {
                    "user": user,
                    "messages": sums["messages"],
                    "input_tokens": sums["input_tokens"],
                    "output_tokens": sums["output_tokens"],
                    "cost": sums["cost_usd"],
                }
                for (user,), sums in users.items()
            ]
        )[:top_users],
    }


def models(filters: MessageFilter) -> bytes:
    """Every model seen among the matching messages with its figures, as JSON (see
    `schemas.ModelList`)."""

    def compute():
        aggregation = Aggregation(filters)
        per_model = _by("model", aggregation.by_dimensions())
        scores = scores_by_model(filters)
        unrated = {"ratings": 0, "avg_score": None}
        return {
            "source": aggregation.source,
            "models": _ranked(
                [
                    {**model_figures(name, sums), **scores.get(name, unrated)}
                    for name, sums in per_model.items()
                ]
            ),
        }

    return _cached_json(f"analytics:models:{filters.cache_key()}", compute)
