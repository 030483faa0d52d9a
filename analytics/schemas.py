"""The JSON shapes of the analytics API (its OpenAPI documentation at /analytics/docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from ninja import Schema
from pydantic import AfterValidator, Field, PlainValidator, WithJsonSchema

from .models import Feedback

CONTENT_NOTE = "Null without the permission proxy.view_message_content."
# Written as text, not re-encoded: the same to the microsecond in lists, exports and the feed.
TIME_NOTE = "ISO 8601 in UTC, e.g. 2026-03-02T12:00:00.000250Z (no fraction on a whole second)."
RATING_NOTE = '"up" or "down" (thumbs), or a whole number of stars from 1 to 5.'
SCORE_NOTE = (
    "The rating on one scale from 0 (worst) to 1 (best): thumbs down 0, up 1; n stars "
    "(n - 1) / 4, so 1 star 0, 3 stars 0.5, 5 stars 1."
)


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
    backend: str = Field(description="The backend that answered (hybrid routing); see README.")


class MessageDetail(MessageOut):
    """One message with everything recorded about it."""

    method: str
    user_agent: str
    thinking: str | None = Field(description=CONTENT_NOTE)
    tool_calls: list | dict | None = Field(description=CONTENT_NOTE)
    messages: list | None = Field(description=f"The chat history sent. {CONTENT_NOTE}")
    conversation: int | None = Field(description="Its conversation (/analytics/conversations).")
    history_missing: int = Field(
        description="First turns of `messages` no longer stored (pruned with an earlier "
        "message of the conversation): `messages` then starts after them."
    )
    options: dict | None
    done_reason: str
    truncated: bool
    total_duration: float | None = Field(description="Ollama's own, seconds.")
    load_duration: float | None
    prompt_eval_duration: float | None
    eval_duration: float | None


class ConversationOut(Schema):
    """Chat messages that continue one history (or that a client named by its id header)."""

    id: int
    external_id: str = Field(description="The conversation id the client sent, if any.")
    user: str
    model: str = Field(description="The model of the last turn.")
    started_at: str = Field(json_schema_extra={"format": "date-time"}, description=TIME_NOTE)
    last_at: str = Field(json_schema_extra={"format": "date-time"}, description=TIME_NOTE)
    turns: int = Field(description="Messages in the conversation.")
    errors: int
    input_tokens: int
    output_tokens: int
    cost: float = Field(description="USD.")
    latency: float = Field(description="Seconds, summed over the turns.")


class ConversationTurn(MessageOut):
    history_turns: int = Field(description="Turns of the history this message continued.")
    new_turns: list | None = Field(
        description=f"The turns it added to the history (its last question). {CONTENT_NOTE}"
    )


class ConversationDetail(ConversationOut):
    thread: list[ConversationTurn] = Field(description="Its messages in order; at most 1000.")


class ConversationPage(Schema):
    conversations: list[ConversationOut]
    limit: int
    offset: int


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
        description="`rollups`, or `messages` when a criterion (search, user, backend, token, "
        "latency or cost range) forced a scan of the messages."
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
    ratings: int = Field(description="Feedback ratings of the model's messages.")
    avg_score: float | None = Field(description=f"Their average score. {SCORE_NOTE}")


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


def _rating(value):
    Feedback.parse_rating(value)
    return value.strip().lower() if isinstance(value, str) else value


def _comment_text(value: str) -> str:
    """Line breaks and tabs are text; other control characters are in no comment (and
    PostgreSQL refuses NUL outright)."""
    if any((ord(char) < 32 and char not in "\n\r\t") or ord(char) == 127 for char in value):
        raise ValueError("control characters other than line breaks and tabs are not allowed")
    return value


def _source_text(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("source is empty")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("control characters are not allowed")
    return value


Rating = Annotated[
    str | int,
    PlainValidator(_rating),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "string", "enum": ["up", "down"]},
                {"type": "integer", "minimum": 1, "maximum": 5},
            ],
            "description": RATING_NOTE,
        }
    ),
]


class FeedbackIn(Schema):
    rating: Rating
    comment: Annotated[str, Field(max_length=2000), AfterValidator(_comment_text)] = ""
    source: Annotated[str, Field(max_length=64), AfterValidator(_source_text)] | None = Field(
        None,
        description="Who or what rates, e.g. `open-webui` or `eval-nightly`: one score per "
        "message and source, replaced when sent again. Default: your username.",
    )


class FeedbackOut(Schema):
    message: str = Field(description="The message's id (its X-Request-Id).")
    source: str
    rating: str | int = Field(description=RATING_NOTE)
    scale: str = Field(description="`thumbs` or `stars`.")
    score: float = Field(description=SCORE_NOTE)
    comment: str | None = Field(description=CONTENT_NOTE)
    user: str | None = Field(description="Whose session or API token sent it.")
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})


class MessageFeedback(Schema):
    message: str
    count: int
    average_score: float | None = Field(description="Mean of the sources' scores (0 to 1).")
    feedback: list[FeedbackOut] = Field(description="Newest first, one per source.")


class RadarAxes(Schema):
    """Relative to the best model shown (1 = the best of them, 0.5 = half as good); null when
    the model has no figure for the axis."""

    speed: float | None = Field(description="Tokens per second over the best.")
    cost: float | None = Field(description="The lowest cost per 1k output tokens over this one.")
    quality: float | None = Field(description="Average feedback score over the best.")
    reliability: float | None = Field(description="Success rate over the best.")


class ComparedModel(Schema):
    model: str
    messages: int
    input_tokens: int
    output_tokens: int
    errors: int
    cancelled: int
    success_rate: float | None = Field(
        description="Successes over successes and errors (a client's cancel is not counted)."
    )
    tokens_per_second: float | None = Field(
        description="Output tokens over generation time, of the messages with a rate."
    )
    avg_ttft: float | None = Field(description="Seconds to the first byte, at the proxy.")
    p50_ttft: float | None
    p50_latency: float | None = Field(description="Estimated from the histogram buckets.")
    p95_latency: float | None
    p99_latency: float | None
    cost: float = Field(description="USD; unpriced messages count as 0.")
    cost_per_1k_output_tokens: float | None = Field(
        description="The whole cost (input tokens and compute included) per 1,000 output tokens."
    )
    ratings: int
    avg_score: float | None = Field(description=SCORE_NOTE)
    radar: RadarAxes


class Comparison(Schema):
    source: str = Field(description="`rollups`, or `messages` when a criterion forced a scan.")
    axes: list[str]
    models: list[ComparedModel] = Field(
        description="In the order asked for, else busiest first (at most 8)."
    )
