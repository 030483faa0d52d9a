"""The one filter of recorded messages, parsed once from a query string and shared by the API
list, the aggregations, the export (and the dashboard pages and admin links).

Times are epoch seconds or ISO 8601 (a time without offset is UTC); both bounds are included.
Bad input raises a validation error naming the parameter (a 422 from the API).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from django.conf import settings
from django.db.models import Exists, OuterRef
from ninja import Schema
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    model_validator,
)

from proxy.models import Message, search_words

from .models import Feedback

# Epoch seconds accepted: from 1970 to the end of year 9999.
_LATEST_EPOCH = 253402300799


def parse_time(value):
    """Epoch seconds (int, float or their text) or ISO 8601 text, as an aware datetime."""
    if value is None or isinstance(value, datetime):
        return _aware(value) if isinstance(value, datetime) else None
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or not 0 <= seconds <= _LATEST_EPOCH:
            raise ValueError(f"epoch seconds out of range: {text!r}")
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(
            f"expected epoch seconds (e.g. 1767225600) or ISO 8601 "
            f"(e.g. 2026-01-01T00:00:00Z), got {text!r}"
        ) from None


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _blank_is_absent(value):
    """`?model=&status=` (an empty form field) filters nothing, as if it were absent."""
    return None if value == "" else value


def _printable(value):
    """Control characters are in no model, user or word; PostgreSQL refuses NUL in text outright
    (a 500 otherwise), so they get a clear 422 on both databases."""
    if isinstance(value, str) and any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("control characters are not allowed")
    return value


Blank = BeforeValidator(_blank_is_absent)
Printable = AfterValidator(_printable)
Time = Annotated[datetime | None, BeforeValidator(parse_time)]
Text = Annotated[Annotated[str, Field(max_length=255), Printable] | None, Blank]
Count = Annotated[NonNegativeInt | None, Blank]
Amount = Annotated[NonNegativeFloat | None, Blank]


class MessageFilter(Schema):
    """Which messages: every given criterion must hold."""

    search: Annotated[Annotated[str, Field(max_length=500), Printable] | None, Blank] = Field(
        None,
        description="Words that must all appear in the prompt or the response (any order, any "
        "case; punctuation separates words).",
    )
    model: Text = Field(None, description="Exact model name, e.g. `llama3.2:latest`.")
    user: Text = None
    endpoint: Text = Field(None, description="e.g. `/api/chat`, `/v1/chat/completions`.")
    category: Text = None
    backend: Text = Field(None, description="The backend that answered, e.g. `gpu-1:11434`.")
    status: Annotated[Literal["success", "error", "cancelled"] | None, Blank] = None
    start_time: Time = Field(None, description="From this time (included): epoch s or ISO 8601.")
    end_time: Time = Field(None, description="Until this time (included): epoch s or ISO 8601.")
    min_input_tokens: Count = None
    max_input_tokens: Count = None
    min_output_tokens: Count = None
    max_output_tokens: Count = None
    min_latency: Amount = Field(None, description="Seconds.")
    max_latency: Amount = Field(None, description="Seconds.")
    min_cost: Amount = Field(None, description="USD.")
    max_cost: Amount = Field(None, description="USD.")
    has_feedback: Annotated[bool | None, Blank] = Field(
        None, description="true: messages someone rated; false: messages nobody rated."
    )
    min_score: Annotated[Annotated[float, Field(ge=0, le=1)] | None, Blank] = Field(
        None,
        description="Messages whose average feedback score (0 worst to 1 best: thumbs down 0, "
        "up 1, n stars (n - 1) / 4) is at least this.",
    )

    @model_validator(mode="after")
    def _consistent(self):
        if self.search is not None and not search_words(self.search):
            raise ValueError("search needs at least one word (letters or digits)")
        if self.min_score is not None and self.has_feedback is False:
            raise ValueError("min_score selects rated messages, has_feedback=false unrated ones")
        if self.start_time and self.end_time and self.start_time > self.end_time:
            raise ValueError("start_time is after end_time")
        for name in ("input_tokens", "output_tokens", "latency", "cost"):
            low, high = getattr(self, f"min_{name}"), getattr(self, f"max_{name}")
            if low is not None and high is not None and low > high:
                raise ValueError(f"min_{name} is greater than max_{name}")
        return self

    # --- applying it ------------------------------------------------------------------------

    def apply(self, queryset=None, *, times: bool = True, whole: bool = False):
        """The messages that match; `times=False` leaves the time range out (the caller
        splits it between rollups and messages); `whole`: every match will be read (an
        aggregation), not a newest-first page."""
        queryset = Message.objects.all() if queryset is None else queryset
        exact = {**self.dimensions(), "user": self.user, "backend": self.backend}
        queryset = queryset.filter(
            **{name: value for name, value in exact.items() if value is not None}
        )
        if self.search is not None:
            queryset = queryset.search(self.search, whole=whole)
        if times:
            queryset = queryset.between(self.start_time, self.end_time)
        for name, column in RANGES.items():
            queryset = queryset.in_range(
                column, getattr(self, f"min_{name}"), getattr(self, f"max_{name}")
            )
        return self._feedback(queryset)

    def _feedback(self, queryset):
        """The feedback criteria, read from the feedback table (far smaller than messages)
        through its (message, source) key."""
        if self.min_score is not None:
            return queryset.filter(pk__in=Feedback.objects.rated_at_least(self.min_score))
        if self.has_feedback is not None:
            rated = Exists(Feedback.objects.filter(message=OuterRef("pk")))
            return queryset.filter(rated if self.has_feedback else ~rated)
        return queryset

    def dimensions(self) -> dict:
        """The criteria that rollups can answer: a rollup row has these columns."""
        return {
            "model": self.model,
            "status": self.status,
            "category": self.category,
            "endpoint": self.endpoint,
        }

    def needs_message_scan(self) -> bool:
        """Whether a criterion has no rollup column, so aggregations must read messages:
        search, user, backend, the token, latency and cost ranges, and feedback."""
        ranges = any(
            getattr(self, f"{bound}_{name}") is not None
            for name in RANGES
            for bound in ("min", "max")
        )
        feedback = self.has_feedback is not None or self.min_score is not None
        return (
            ranges
            or feedback
            or any(value is not None for value in (self.search, self.user, self.backend))
        )

    def cache_key(self, *extra) -> str:
        """A stable key for these criteria (and `extra`), for caching derived results."""
        criteria = self.model_dump(mode="json", exclude_none=True)
        text = json.dumps([criteria, *extra], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


RANGES = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "latency": "latency_seconds",
    "cost": "cost_usd",
}


# --- pages ------------------------------------------------------------------------------------


def encode_cursor(key: tuple[datetime, int]) -> str:
    """The opaque cursor of a page that continues after the row (timestamp, pk)."""
    timestamp, pk = key
    micros = (timestamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{micros}:{pk}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        micros, pk = base64.urlsafe_b64decode(padded.encode()).decode().split(":")
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros))
        return moment, int(pk)
    except (ValueError, binascii.Error, OverflowError, UnicodeDecodeError):
        raise ValueError("cursor is not one this API returned (use next_cursor as is)") from None


class PageParams(Schema):
    limit: int = Field(
        50,
        ge=1,
        le=settings.ANALYTICS_MAX_LIMIT,
        description=f"Messages per page, at most {settings.ANALYTICS_MAX_LIMIT}.",
    )
    offset: NonNegativeInt = Field(
        0, description="Messages to skip (kept for compatibility; deep pages: use the cursor)."
    )
    cursor: Annotated[Annotated[str, Field(max_length=100)] | None, Blank] = Field(
        None, description="`next_cursor` of the previous page."
    )

    @model_validator(mode="after")
    def _one_way(self):
        if self.cursor is not None:
            if self.offset:
                raise ValueError("give either cursor or offset, not both")
            decode_cursor(self.cursor)
        return self

    def position(self, queryset):
        """The queryset positioned after the cursor, and the offset left to skip."""
        if self.cursor is None:
            return queryset, self.offset
        return queryset.older_than(*decode_cursor(self.cursor)), 0
