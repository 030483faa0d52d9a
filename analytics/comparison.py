"""Models side by side (/analytics/compare and the page /dashboard/compare/): speed, time to
first token, latency percentiles, success rate, cost per 1,000 output tokens, feedback and
volume of each model over the same messages, and four axes for a radar chart.

The figures come from the rollups (through `aggregations.Aggregation`, so the same criteria
and time ranges as the other aggregations apply, percentiles estimated from the histogram
buckets the same way) and the feedback from the feedback table.

The radar's axes are relative to the best model shown, so 1 is the best of these models on
that axis, and 0.5 is half as good:

- speed: tokens per second over the best tokens per second;
- cost: the lowest cost per 1,000 output tokens over this model's (a model that cost nothing
  is 1);
- quality: the average feedback score over the best average score;
- reliability: the success rate over the best success rate.

An axis a model has no figure for (no rated message, no output tokens) is null.
"""

from __future__ import annotations

from proxy.models import LATENCY_BUCKETS, ROLLUP_SUMS, TTFT_BUCKETS, Message

from .aggregations import DIMENSIONS, Aggregation, percentiles
from .filters import MessageFilter
from .scores import scores_by_model

# More models than this make the radar unreadable; the busiest are shown by default.
MAX_MODELS = 8
AXES = ("speed", "cost", "quality", "reliability")


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else None


def _per_model(grouped: dict) -> tuple[dict, dict]:
    """The rollup sums of each model, and its message counts per status."""
    model_at, status_at = DIMENSIONS.index("model"), DIMENSIONS.index("status")
    sums, statuses = {}, {}
    for key, row in grouped.items():
        model = key[model_at]
        total = sums.setdefault(model, dict.fromkeys(ROLLUP_SUMS, 0))
        for name in ROLLUP_SUMS:
            total[name] += row[name]
        counts = statuses.setdefault(model, dict.fromkeys(Message.Status.values, 0))
        counts[key[status_at]] = counts.get(key[status_at], 0) + row["messages"]
    return sums, statuses


def model_figures(model: str, sums: dict, statuses: dict, scores: dict) -> dict:
    """The raw figures of one model (see `schemas.ComparedModel`)."""
    success, error = statuses[Message.Status.SUCCESS], statuses[Message.Status.ERROR]
    latency = percentiles([sums[bucket] for bucket in LATENCY_BUCKETS])
    ttft = percentiles([sums[bucket] for bucket in TTFT_BUCKETS])
    cost_per_output = _ratio(sums["cost_usd"], sums["output_tokens"])
    return {
        "model": model,
        "messages": sums["messages"],
        "input_tokens": sums["input_tokens"],
        "output_tokens": sums["output_tokens"],
        "errors": error,
        "cancelled": statuses[Message.Status.CANCELLED],
        "success_rate": _ratio(success, success + error),
        "tokens_per_second": _ratio(sums["generated_tokens"], sums["generation_seconds"]),
        "avg_ttft": _ratio(sums["ttft_seconds"], sums["ttft_messages"]),
        "p50_ttft": ttft["p50"],
        "p50_latency": latency["p50"],
        "p95_latency": latency["p95"],
        "p99_latency": latency["p99"],
        "cost": sums["cost_usd"],
        "cost_per_1k_output_tokens": None if cost_per_output is None else cost_per_output * 1000,
        "ratings": scores.get("ratings", 0),
        "avg_score": scores.get("avg_score"),
    }


def _higher_is_better(values: list) -> list:
    best = max((value for value in values if value is not None), default=None)
    if not best:  # nothing known, or every known value is 0: all equal
        return [None if value is None else 1.0 for value in values]
    return [None if value is None else value / best for value in values]


def _lower_is_better(values: list) -> list:
    best = min((value for value in values if value is not None), default=None)
    return [None if value is None else 1.0 if value == 0 else best / value for value in values]


def radar(rows: list[dict]) -> list[dict]:
    """Each model's four axes, relative to the best of `rows` (see the module's docstring)."""
    axes = {
        "speed": _higher_is_better([row["tokens_per_second"] for row in rows]),
        "cost": _lower_is_better([row["cost_per_1k_output_tokens"] for row in rows]),
        "quality": _higher_is_better([row["avg_score"] for row in rows]),
        "reliability": _higher_is_better([row["success_rate"] for row in rows]),
    }
    return [{axis: axes[axis][index] for axis in AXES} for index in range(len(rows))]


def compare(filters: MessageFilter, models: list[str] | None = None) -> dict:
    """The figures and radar axes of `models` (default: the busiest `MAX_MODELS`) over the
    messages `filters` match; a model without such messages is left out."""
    aggregation = Aggregation(filters)
    sums, statuses = _per_model(aggregation.by_dimensions())
    if models:
        chosen = [model for model in dict.fromkeys(models) if model in sums]
    else:
        chosen = sorted(sums, key=lambda model: (-sums[model]["messages"], model))[:MAX_MODELS]
    scores = scores_by_model(filters)
    rows = [
        model_figures(model, sums[model], statuses[model], scores.get(model, {}))
        for model in chosen
    ]
    for row, axes in zip(rows, radar(rows), strict=True):
        row["radar"] = axes
    return {"source": aggregation.source, "axes": list(AXES), "models": rows}
