"""The periods a report covers: [start, end) in the configured TIME_ZONE.

A named period is the last complete one before now ("day" is yesterday, "week" last week from
Monday, "month" last month) and is compared with the calendar period before it; a custom range
is compared with the range of equal length just before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.utils import timezone

KINDS = ("day", "week", "month")
# About ten years: at most ~120 monthly buckets, each an aggregation of its own.
MAX_LENGTH = timedelta(days=3660)


@dataclass(frozen=True)
class Period:
    start: datetime  # included
    end: datetime  # excluded
    kind: str  # one of KINDS, or "custom"

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def previous(self) -> Period:
        """The period this one is compared with."""
        if self.kind == "custom":
            return Period(self.start - self.length, self.start, "custom")
        first = timezone.localtime(self.start).date()
        return Period(midnight(_step(first, self.kind, -1)), self.start, self.kind)

    @property
    def label(self) -> str:
        first = timezone.localtime(self.start)
        last = timezone.localtime(self.end - timedelta(microseconds=1))
        if self.kind == "day":
            return f"{first:%A} {_day(first)}"
        if self.kind == "week":
            return f"week {first:%V}, {_day(first)} to {_day(last)}"
        if self.kind == "month":
            return f"{first:%B %Y}"
        if first.time() == time() and timezone.localtime(self.end).time() == time():
            return _day(first) if first.date() == last.date() else f"{_day(first)} to {_day(last)}"
        return f"{first:%Y-%m-%d %H:%M} to {timezone.localtime(self.end):%Y-%m-%d %H:%M}"


def _day(moment) -> str:
    return f"{moment.day} {moment:%B %Y}"


def midnight(day: date) -> datetime:
    """The start of a local day, in UTC: arithmetic on times of one zone is wall-clock time in
    Python (a day with a clock change would last 24 hours), on UTC it is elapsed time."""
    return datetime.combine(day, time(), tzinfo=timezone.get_default_timezone()).astimezone(UTC)


def _step(day: date, kind: str, count: int) -> date:
    """The first day of the period of `kind` `count` periods from the one starting on `day`."""
    if kind == "day":
        return day + timedelta(days=count)
    if kind == "week":
        return day + timedelta(weeks=count)
    months = day.year * 12 + day.month - 1 + count
    return date(months // 12, months % 12 + 1, 1)


def last(kind: str, now: datetime | None = None) -> Period:
    """The last complete period of `kind` before `now`."""
    if kind not in KINDS:
        raise ValueError(f"period must be one of {', '.join(KINDS)}, got {kind!r}")
    today = timezone.localtime(now or timezone.now()).date()
    if kind == "week":
        current = today - timedelta(days=today.weekday())
    elif kind == "month":
        current = today.replace(day=1)
    else:
        current = today
    return Period(midnight(_step(current, kind, -1)), midnight(current), kind)


def custom(start: str, end: str) -> Period:
    """A range from two bounds, each a date (YYYY-MM-DD: whole days in TIME_ZONE, the end day
    included) or an ISO 8601 time (the end excluded; without an offset, in TIME_ZONE)."""
    period = Period(_bound(start, "start"), _bound(end, "end"), "custom")
    if period.start >= period.end:
        raise ValueError("start must be before end")
    if period.length > MAX_LENGTH:
        raise ValueError(f"a report covers at most {MAX_LENGTH.days} days")
    return period


def _bound(text: str, name: str) -> datetime:
    text = (text or "").strip()
    if not text:
        raise ValueError(f"{name} is missing")
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = midnight(day + timedelta(days=1) if name == "end" else day)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.get_default_timezone())
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(
            f"{name} must be a date (2026-03-01) or an ISO 8601 time (2026-03-01T08:00+01:00), "
            f"got {text!r}"
        ) from None
    if moment.year < 1971 or moment.year > 9998:
        raise ValueError(f"{name} is out of range: {text!r}")
    return moment
