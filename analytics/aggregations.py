"""Aggregations over recorded messages, read from rollups rather than messages (DESIGN.md §4).

A time range is cut into whole days, hours and minutes of rollup rows (each message counted in
exactly one of them) plus, at the two ends, the seconds no whole minute covers, which are
read from the messages (an index range scan of at most a minute each). Criteria that rollups
have no column for (search, user, token/latency/cost ranges) make the whole aggregation a
message scan; so does a category or endpoint criterion for the user figures (unique and top
users), whose rollups are kept per user, model and status only.

Percentiles are estimated from the rollups' fixed histogram buckets by linear interpolation
within the bucket that holds the rank: the true value always lies within that bucket, whose
bounds are returned with the estimate (`bounds`), so the error is at most the bucket's width.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import F

from proxy.models import (
    HISTOGRAM_BOUNDS,
    LATENCY_BUCKETS,
    ROLLUP_SUMS,
    TTFT_BUCKETS,
    USER_ROLLUP_SUMS,
    EpochSeconds,
    Message,
    MessageRollup,
    UserRollup,
    json_time,
    time_bucket,
)

from .filters import MessageFilter

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
    """Where the figures of a time range come from."""

    spans: list[tuple[int, int | None, int | None]] = field(default_factory=list)
    edges: list[tuple[datetime | None, datetime | None, bool]] = field(default_factory=list)

    def edge_messages(self, messages):
        """The messages of the edges (start included; end included when flagged)."""
        for start, end, end_included in self.edges:
            queryset = messages
            if start is not None:
                queryset = queryset.filter(timestamp__gte=start)
            if end is not None:
                lookup = "timestamp__lte" if end_included else "timestamp__lt"
                queryset = queryset.filter(**{lookup: end})
            yield queryset


def plan(start: datetime | None, end: datetime | None, resolutions: tuple[int, ...]) -> Plan:
    """Cut [start, end] (both included, either open) into rollup spans of the given
    resolutions (ascending; the first is the finest) and message edges."""
    finest = resolutions[0]
    step = finest * 1_000_000
    low = None if start is None else -(-_micros(start) // step) * finest
    high = None if end is None else ((_micros(end) + 1) // step) * finest
    if low is not None and high is not None and low >= high:
        return Plan(edges=[(start, end, True)])
    result = Plan()
    if start is not None and _micros(start) < low * 1_000_000:
        result.edges.append((start, _moment(low), False))
    if end is not None:
        result.edges.append((_moment(high), end, True))
    _cut(low, high, tuple(sorted(resolutions, reverse=True)), result.spans)
    return result


def _cut(low, high, resolutions, spans) -> None:
    size, finer = resolutions[0], resolutions[1:]
    if not finer:
        spans.append((size, low, high))
        return
    inner_low = None if low is None else -(-low // size) * size
    inner_high = None if high is None else high // size * size
    if inner_low is not None and inner_high is not None and inner_low >= inner_high:
        _cut(low, high, finer, spans)
        return
    spans.append((size, inner_low, inner_high))
    if low is not None and low < inner_low:
        _cut(low, inner_low, finer, spans)
    if high is not None and inner_high < high:
        _cut(inner_high, high, finer, spans)


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def _moment(epoch_seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=epoch_seconds)


# --- reading ----------------------------------------------------------------------------------


def _merge(rows, keys, into: dict | None = None) -> dict:
    """Sum grouped rows from several sources by their group key."""
    merged = {} if into is None else into
    for row in rows:
        key = tuple(row[name] for name in keys)
        target = merged.get(key)
        if target is None:
            merged[key] = {name: value or 0 for name, value in row.items() if name not in keys}
            continue
        for name, value in row.items():
            if name not in keys and value:
                target[name] += value
    return merged


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

    def _grouped(self, keys, sums, resolutions, *, messages: dict, rollups):
        """Sums per group key from rollups and edge messages (or messages alone when a
        criterion has no rollup column). `messages` are the expressions the keys need on
        messages, `rollups(resolution)` those on rollup rows of that resolution."""
        start, end = self.filters.start_time, self.filters.end_time
        if self.scan:
            scanned = self.messages.between(start, end)
            return _merge(scanned.summarise(*keys, sums=sums, **messages), keys)
        cut = plan(start, end, resolutions)
        merged = {}
        # A query per span: each reads one index range, grouped in index order when it can.
        for span in cut.spans:
            rows = MessageRollup.objects.filter(**self.dimensions).covering([span])
            _merge(rows.summarise(*keys, sums=sums, **rollups(span[0])), keys, merged)
        for edge in cut.edge_messages(self.messages):
            _merge(edge.summarise(*keys, sums=sums, **messages), keys, merged)
        return merged

    def by_dimensions(self) -> dict:
        """Every sum per (model, status, category, endpoint)."""
        return self._grouped(
            DIMENSIONS,
            ROLLUP_SUMS,
            MessageRollup.RESOLUTIONS,
            messages={},
            rollups=lambda resolution: {},
        )

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

        def rollup_time(resolution: int) -> dict:
            if resolution == seconds and not offset:
                # Rows of the interval's own resolution: grouped by the column itself, in
                # the order of the series index (31 to 14 ms for 30 days of hours, SQLite).
                return {"time": F("bucket_start")}
            return {"time": time_bucket(F("bucket_start"), seconds, offset)}

        grouped = self._grouped(
            ("time", "status"),
            SERIES_SUMS,
            resolutions,
            messages={"time": time_bucket(EpochSeconds("timestamp"), seconds, offset)},
            rollups=rollup_time,
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
        if self.scan or beyond_user_rollups:
            rows = self.messages.between(start, end).summarise_users("user")
            return _merge(rows, ("user",))
        cut = plan(start, end, UserRollup.RESOLUTIONS)
        merged = {}
        for span in cut.spans:
            rollups = UserRollup.objects.filter(**self.dimensions).covering([span])
            _merge(rollups.summarise("user", sums=USER_ROLLUP_SUMS), ("user",), merged)
        for edge in cut.edge_messages(self.messages):
            _merge(edge.summarise_users("user"), ("user",), merged)
        return merged


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
    total = dict.fromkeys(ROLLUP_SUMS, 0)
    for sums in groups:
        for name in ROLLUP_SUMS:
            total[name] += sums[name]
    return total


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
        return {
            "source": aggregation.source,
            "models": _ranked([model_figures(name, sums) for name, sums in per_model.items()]),
        }

    return _cached_json(f"analytics:models:{filters.cache_key()}", compute)
