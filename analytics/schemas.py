"""The JSON shapes of the analytics API (its OpenAPI documentation at /analytics/docs)."""

from __future__ import annotations

from datetime import datetime

from ninja import Schema
from pydantic import Field

CONTENT_NOTE = "Null without the permission proxy.view_message_content."
# Written as text, not re-encoded: the same to the microsecond in lists, exports and the feed.
TIME_NOTE = "ISO 8601 in UTC, e.g. 2026-03-02T12:00:00.000250Z (no fraction on a whole second)."


class MessageOut(Schema):
    """One recorded message; the same shape in lists, exports and the live feed (its names
    and order are `proxy.models.Message.JSON_FIELDS`)."""

    id: str = Field(description="The message's request id, as in the X-Request-Id header.")
    timestamp: str = Field(json_schema_extra={"format": "date-time"}, description=TIME_NOTE)
    endpoint: str
    model: str
    status: str = Field(description="success, error or cancelled.")
    http_status: int | None
    user: str
    client_ip: str | None
    prompt: str | None = Field(description=CONTENT_NOTE)
    response: str | None = Field(description=CONTENT_NOTE)
    input_tokens: int | None
    output_tokens: int | None
    latency: float = Field(description="Seconds from request to last byte, at the proxy.")
    ttft: float | None = Field(description="Seconds to the first byte, at the proxy.")
    tokens_per_second: float | None
    cost: float | None = Field(description="USD, from the price table; null when unpriced.")
    category: str
    error: str | None = Field(description=CONTENT_NOTE)
    stream: bool


class MessageDetail(MessageOut):
    """One message with everything recorded about it."""

    method: str
    user_agent: str
    thinking: str | None = Field(description=CONTENT_NOTE)
    tool_calls: list | dict | None = Field(description=CONTENT_NOTE)
    messages: list | None = Field(description=f"The chat history sent. {CONTENT_NOTE}")
    options: dict | None
    done_reason: str
    truncated: bool
    total_duration: float | None = Field(description="Ollama's own, seconds.")
    load_duration: float | None
    prompt_eval_duration: float | None
    eval_duration: float | None


class MessagePage(Schema):
    messages: list[MessageOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: end.")
    limit: int
    offset: int


class Percentiles(Schema):
    p50: float | None
    p95: float | None
    p99: float | None
    bounds: dict[str, list[float | None] | None] = Field(
        description="Per percentile, the histogram bucket [lower, upper] the true value lies "
        "in (upper null beyond the last bound, 300 s): the estimate's error is at most "
        "the bucket's width."
    )


class Figures(Schema):
    messages: int
    input_tokens: int
    output_tokens: int
    cost: float
    avg_latency: float | None


class TimePoint(Schema):
    time: str = Field(
        json_schema_extra={"format": "date-time"},
        description="Start of the interval (UTC; weeks start on Monday).",
    )
    messages: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: float


class CategoryFigures(Figures):
    category: str


class ModelFigures(Figures):
    model: str


class StatusFigures(Figures):
    status: str


class EndpointFigures(Figures):
    endpoint: str


class ModelRate(Schema):
    model: str
    messages: int
    tokens_per_second: float | None = Field(
        description="Output tokens over generation time, of the messages with a rate."
    )


class UserFigures(Schema):
    user: str
    messages: int
    input_tokens: int
    output_tokens: int
    cost: float


class Aggregations(Schema):
    source: str = Field(
        description="`rollups`, or `messages` when a criterion (search, user, token, latency "
        "or cost range) forced a scan of the messages."
    )
    total_messages: int
    unique_users: int
    total_input_tokens: int
    total_output_tokens: int
    avg_input_tokens: float | None
    avg_output_tokens: float | None
    total_cost: float
    avg_latency: float | None
    avg_ttft: float | None
    latency_percentiles: Percentiles
    ttft_percentiles: Percentiles
    interval: str
    messages_by_time: list[TimePoint]
    by_category: list[CategoryFigures]
    by_model: list[ModelFigures]
    by_status: list[StatusFigures]
    by_endpoint: list[EndpointFigures]
    tokens_per_second_by_model: list[ModelRate]
    top_users: list[UserFigures]


class ModelSummary(Schema):
    model: str
    messages: int
    input_tokens: int
    output_tokens: int
    avg_input_tokens: float | None
    avg_output_tokens: float | None
    cost: float
    avg_latency: float | None
    p50_latency: float | None
    p95_latency: float | None
    avg_ttft: float | None
    tokens_per_second: float | None


class ModelList(Schema):
    source: str
    models: list[ModelSummary]


class TokenIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    expires_at: datetime | None = None


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewToken(TokenOut):
    token: str = Field(description="The token itself: shown this once, never again.")
