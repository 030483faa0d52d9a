"""A report of one period against the one before it, read from the rollups.

The period is cut into buckets (hours, days, weeks or months, at most a few dozen); each
bucket's sums come from the analytics `Aggregation` (rollup rows, plus messages for the seconds
no whole minute covers), and the period's totals are the sum of its buckets, so the trend and
the totals always agree. Messages themselves are read only for what no rollup holds: example
errors of a spike and the slowest requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone

from analytics.aggregations import Aggregation, percentiles
from analytics.filters import MessageFilter
from proxy.models import LATENCY_BUCKETS, ROLLUP_SUMS, TTFT_BUCKETS, Message, json_time

from .periods import Period, midnight

TOP = 10
# A bucket is an error spike when it has at least this many errors and an error rate at least
# SPIKE_FACTOR times the previous period's (or, without one, this period's), and SPIKE_MIN_RATE.
SPIKE_MIN_ERRORS = 3
SPIKE_FACTOR = 2.0
SPIKE_MIN_RATE = 0.05
SPIKES = 5
EXAMPLES = 3
SLOWEST = 10
ERROR_TEXT_CHARS = 300
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Figure:
    """A value of this period beside the previous period's, and how it changed.

    `unit` is how to show it: count, usd, seconds, rate (a fraction; its change is in points)
    or speed (tokens per second). `better` says which way is good (higher, lower or None).
    """

    current: float | None
    previous: float | None
    unit: str = "count"
    better: str | None = None

    @property
    def change(self) -> float | None:
        """The relative change (0.25 for +25 %); for a rate, the difference in points."""
        if self.current is None or self.previous is None:
            return None
        if self.unit == "rate":
            return self.current - self.previous
        if not self.previous:
            return None
        return (self.current - self.previous) / self.previous

    @property
    def trend(self) -> str | None:
        """up, down, same, new (nothing before) or None (nothing to compare)."""
        if self.current is None or self.previous is None:
            return None
        if self.unit != "rate" and not self.previous:
            return "new" if self.current else "same"
        change = self.change
        return "same" if abs(change) < 0.0005 else ("up" if change > 0 else "down")

    @property
    def good(self) -> bool | None:
        if self.better is None or self.trend not in {"up", "down"}:
            return None
        return (self.trend == "up") == (self.better == "higher")


@dataclass
class Bucket:
    start: datetime
    end: datetime
    label: str
    sums: dict = field(default_factory=dict)  # {(model, status, category, endpoint): sums}
    figures: dict = field(default_factory=dict)


@dataclass
class Report:
    period: Period
    previous: Period
    generated_at: datetime
    bucket_name: str
    buckets: list[Bucket]
    totals: dict[str, Figure]
    models: list[dict]
    users: list[dict]
    categories: list[dict]
    spikes: list[dict]
    slowest: list[dict]
    error_baseline: float | None
    dashboard_url: str

    # Every model, user and category is in the CSV; the HTML and text show the first TOP.
    @property
    def top_models(self) -> list[dict]:
        return self.models[:TOP]

    @property
    def top_users(self) -> list[dict]:
        return self.users[:TOP]

    @property
    def top_categories(self) -> list[dict]:
        return self.categories[:TOP]

    @property
    def other_models(self) -> int:
        return max(0, len(self.models) - TOP)

    @property
    def other_users(self) -> int:
        return max(0, len(self.users) - TOP)

    @property
    def spike_threshold(self) -> float:
        return spike_threshold(self.error_baseline)

    @property
    def empty(self) -> bool:
        return not self.totals["messages"].current

    @property
    def previous_had_messages(self) -> bool:
        return bool(self.totals["messages"].previous)


TOTALS = (
    ("messages", "Messages", "count", None),
    ("error_rate", "Error rate", "rate", "lower"),
    ("errors", "Errors", "count", "lower"),
    ("users", "Users", "count", None),
    ("input_tokens", "Input tokens", "count", None),
    ("output_tokens", "Output tokens", "count", None),
    ("cost", "Cost", "usd", "lower"),
    ("avg_latency", "Average latency", "seconds", "lower"),
    ("p50_latency", "Latency p50", "seconds", "lower"),
    ("p95_latency", "Latency p95", "seconds", "lower"),
    ("avg_ttft", "Average time to first token", "seconds", "lower"),
    ("p50_ttft", "Time to first token p50", "seconds", "lower"),
    ("p95_ttft", "Time to first token p95", "seconds", "lower"),
    ("tokens_per_second", "Tokens per second", "speed", "higher"),
)
LABELS = {name: label for name, label, _, _ in TOTALS}


def build(period: Period, *, base_url: str, error_text: bool = False) -> Report:
    """The report of `period` against `period.previous()`.

    `base_url` makes the links absolute (admin and dashboard pages); `error_text` quotes the
    error text of the example errors (readers who may see message content only).
    """
    previous = period.previous()
    buckets = _buckets(period)
    for bucket in buckets:
        bucket.sums = _aggregation(bucket.start, bucket.end).by_dimensions()
        bucket.figures = _figures(_sum(bucket.sums))
    now_sums = _merged(bucket.sums for bucket in buckets)
    before_sums = _aggregation(previous.start, previous.end).by_dimensions()
    now_users = _aggregation(period.start, period.end).by_user()
    before_users = _aggregation(previous.start, previous.end).by_user()

    now, before = _figures(_sum(now_sums)), _figures(_sum(before_sums))
    now["users"], before["users"] = len(now_users), len(before_users)
    totals = {
        name: Figure(now[name], before[name], unit, better) for name, _, unit, better in TOTALS
    }
    baseline = before["error_rate"] if before["messages"] else now["error_rate"]
    links = Links(base_url)
    models = _dimension_rows("model", now_sums, before_sums, period, links)
    categories = _dimension_rows("category", now_sums, before_sums, period, links)
    users = _user_rows(now_users, before_users, period, links)
    return Report(
        period=period,
        previous=previous,
        generated_at=timezone.now(),
        bucket_name=_bucket_name(period),
        buckets=buckets,
        totals=totals,
        models=models,
        users=users,
        categories=categories,
        spikes=_spikes(buckets, baseline, links, error_text),
        slowest=_slowest(period, links),
        error_baseline=baseline,
        dashboard_url=links.dashboard(period.start, period.end),
    )


# --- reading ----------------------------------------------------------------------------------


def _aggregation(start: datetime, end: datetime) -> Aggregation:
    """The analytics aggregation of [start, end): its filter includes both ends."""
    return Aggregation(MessageFilter(start_time=start, end_time=end - MICROSECOND))


def _bucket_name(period: Period) -> str:
    days = period.length / timedelta(days=1)
    if days <= 2:
        return "hour"
    if days <= 62:
        return "day"
    if days <= 366:
        return "week"
    return "month"


def _buckets(period: Period) -> list[Bucket]:
    """The period cut in hours (absolute, so a DST day has 23 or 25), or local days, weeks
    or months; the last one ends with the period."""
    name = _bucket_name(period)
    buckets = []
    start = period.start
    while start < period.end:
        if name == "hour":
            end = start + timedelta(hours=1)
            label = f"{timezone.localtime(start):%H:%M}"
        else:
            local = timezone.localtime(start)
            day = local.date()
            if name == "day":
                following, label = day + timedelta(days=1), f"{local:%a} {day.day}"
            elif name == "week":
                following, label = day + timedelta(days=7), f"{day.day} {local:%b}"
            else:
                months = day.year * 12 + day.month
                following = day.replace(year=months // 12, month=months % 12 + 1, day=1)
                label = f"{local:%b %Y}"
            end = midnight(following)
        end = min(end, period.end)
        buckets.append(Bucket(start, end, label))
        start = end
    return buckets


def _merged(many) -> dict:
    merged: dict = {}
    for grouped in many:
        for key, sums in grouped.items():
            target = merged.setdefault(key, dict.fromkeys(ROLLUP_SUMS, 0))
            for name in ROLLUP_SUMS:
                target[name] += sums[name] or 0
    return merged


def _sum(grouped: dict, index: int | None = None, value=None) -> dict:
    """The sums of every group, or of those whose key has `value` at `index`, plus their
    error count."""
    total = dict.fromkeys(ROLLUP_SUMS, 0)
    total["errors"] = 0
    for key, sums in grouped.items():
        if index is not None and key[index] != value:
            continue
        for name in ROLLUP_SUMS:
            total[name] += sums[name] or 0
        if key[1] == Message.Status.ERROR:
            total["errors"] += sums["messages"]
    return total


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else None


def _figures(sums: dict) -> dict:
    latency = percentiles([sums[name] for name in LATENCY_BUCKETS])
    ttft = percentiles([sums[name] for name in TTFT_BUCKETS])
    return {
        "messages": sums["messages"],
        "errors": sums["errors"],
        "error_rate": _ratio(sums["errors"], sums["messages"]),
        "input_tokens": sums["input_tokens"],
        "output_tokens": sums["output_tokens"],
        "cost": sums["cost_usd"],
        "avg_latency": _ratio(sums["latency_seconds"], sums["messages"]),
        "p50_latency": latency["p50"],
        "p95_latency": latency["p95"],
        "avg_ttft": _ratio(sums["ttft_seconds"], sums["ttft_messages"]),
        "p50_ttft": ttft["p50"],
        "p95_ttft": ttft["p95"],
        "tokens_per_second": _ratio(sums["generated_tokens"], sums["generation_seconds"]),
    }


# --- tables -----------------------------------------------------------------------------------


class Links:
    """Absolute links to the admin and the dashboard."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")

    def message(self, pk: int) -> str:
        return self.base_url + reverse("admin:proxy_message_change", args=[pk])

    def dashboard(self, start: datetime, end: datetime, **criteria) -> str:
        query = {
            "range": "custom",
            "start_time": json_time(start),
            "end_time": json_time(end - MICROSECOND),
            **criteria,
        }
        return f"{self.base_url}{reverse('dashboard')}?{urlencode(query)}"


def _ranked(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda row: (-row["messages"].current, row["name"]))


# Where each dimension is in the key of `Aggregation.by_dimensions`.
KEY_INDEX = {"model": 0, "category": 2}


def _dimension_rows(dimension, now_sums, before_sums, period, links) -> list[dict]:
    """Per model or category: this period's figures beside the previous one's."""
    index = KEY_INDEX[dimension]
    total = _sum(now_sums)["messages"]
    rows = []
    for name in sorted({key[index] for key in now_sums}):
        now = _figures(_sum(now_sums, index, name))
        before = _figures(_sum(before_sums, index, name))
        rows.append(
            {
                "name": name,
                "messages": Figure(now["messages"], before["messages"]),
                "share": _ratio(now["messages"], total),
                "errors": now["errors"],
                "error_rate": Figure(now["error_rate"], before["error_rate"], "rate", "lower"),
                "input_tokens": now["input_tokens"],
                "output_tokens": now["output_tokens"],
                "cost": Figure(now["cost"], before["cost"], "usd", "lower"),
                "p50_latency": now["p50_latency"],
                "p95_latency": Figure(
                    now["p95_latency"], before["p95_latency"], "seconds", "lower"
                ),
                "p50_ttft": now["p50_ttft"],
                "tokens_per_second": Figure(
                    now["tokens_per_second"], before["tokens_per_second"], "speed", "higher"
                ),
                "url": links.dashboard(period.start, period.end, **{dimension: name}),
            }
        )
    return _ranked(rows)


def _user_rows(now_users: dict, before_users: dict, period, links) -> list[dict]:
    rows = []
    for (name,), sums in now_users.items():
        before = before_users.get((name,), {})
        rows.append(
            {
                "name": name,
                "messages": Figure(sums["messages"], before.get("messages", 0)),
                "input_tokens": sums["input_tokens"] or 0,
                "output_tokens": sums["output_tokens"] or 0,
                "cost": Figure(sums["cost_usd"] or 0, before.get("cost_usd") or 0, "usd", "lower"),
                "url": links.dashboard(period.start, period.end, user=name),
            }
        )
    return _ranked(rows)


def spike_threshold(baseline: float | None) -> float:
    """The error rate from which a bucket with SPIKE_MIN_ERRORS errors is a spike."""
    return max(SPIKE_FACTOR * (baseline or 0), SPIKE_MIN_RATE)


def _spikes(buckets, baseline, links, error_text: bool) -> list[dict]:
    """The buckets whose error rate stands out (see SPIKE_*), most errors first, each with the
    models that failed and its newest errors."""
    threshold = spike_threshold(baseline)
    spikes = []
    for bucket in buckets:
        figures = bucket.figures
        if figures["errors"] < SPIKE_MIN_ERRORS or figures["error_rate"] < threshold:
            continue
        by_model: dict[str, int] = {}
        for (model, status, _, _), sums in bucket.sums.items():
            if status == Message.Status.ERROR:
                by_model[model] = by_model.get(model, 0) + sums["messages"]
        spikes.append(
            {
                "start": bucket.start,
                "end": bucket.end,
                "label": bucket.label,
                "messages": figures["messages"],
                "errors": figures["errors"],
                "error_rate": figures["error_rate"],
                "models": sorted(by_model.items(), key=lambda item: (-item[1], item[0])),
                "examples": _examples(bucket, links, error_text),
                "url": links.dashboard(bucket.start, bucket.end, status=Message.Status.ERROR),
            }
        )
    spikes.sort(key=lambda spike: (-spike["errors"], spike["start"]))
    return spikes[:SPIKES]


MESSAGE_COLUMNS = (
    "pk",
    "timestamp",
    "model",
    "endpoint",
    "user",
    "status",
    "http_status",
    "latency_seconds",
    "ttft_seconds",
    "output_tokens",
)


def _examples(bucket: Bucket, links, error_text: bool) -> list[dict]:
    """The newest errors of a bucket (served by `message_status_time_idx`)."""
    errors = (
        Message.objects.with_status(Message.Status.ERROR)
        .filter(timestamp__gte=bucket.start, timestamp__lt=bucket.end)
        .newest_first()
    )
    columns = (*MESSAGE_COLUMNS, "error") if error_text else MESSAGE_COLUMNS
    rows = []
    for row in errors.values(*columns)[:EXAMPLES]:
        if error_text:
            text = row["error"]
            row["error"] = text if len(text) <= ERROR_TEXT_CHARS else text[:ERROR_TEXT_CHARS] + "…"
        rows.append(_message_row(row, links))
    return rows


def _slowest(period: Period, links) -> list[dict]:
    """The period's slowest requests. No index has latency, so this reads the period's rows
    through the time index: most of a long report's time (measured for a month of 152k
    messages: 0.9 of 1.3 s on SQLite, 0.3 of 1.4 s on PostgreSQL); a (timestamp, latency)
    index would make it index-only."""
    slowest = (
        Message.objects.filter(timestamp__gte=period.start, timestamp__lt=period.end)
        .order_by("-latency_seconds", "-id")
        .values(*MESSAGE_COLUMNS)[:SLOWEST]
    )
    return [_message_row(row, links) for row in slowest]


def _message_row(row: dict, links) -> dict:
    row["url"] = links.message(row["pk"])
    row["time"] = timezone.localtime(row["timestamp"])
    return row
