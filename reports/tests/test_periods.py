"""Report periods: the last complete day, week or month in TIME_ZONE, the period compared with
it, and custom ranges."""

from datetime import UTC, datetime, timedelta

import pytest

from reports import periods

from .conftest import local


def test_day_is_yesterday_in_the_configured_time_zone():
    # 00:30 in Berlin is still the previous day in UTC: the zone decides.
    day = periods.last("day", now=datetime(2026, 3, 2, 23, 30, tzinfo=UTC))
    assert (day.start, day.end) == (local(2026, 3, 2), local(2026, 3, 3))
    assert day.start == datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    assert day.label == "Monday 2 March 2026"
    previous = day.previous()
    assert (previous.start, previous.end) == (local(2026, 3, 1), local(2026, 3, 2))


def test_week_is_last_week_from_monday_and_month_is_last_month():
    now = local(2026, 3, 4, 15, 0)  # a Wednesday
    week = periods.last("week", now=now)
    assert (week.start, week.end) == (local(2026, 2, 23), local(2026, 3, 2))
    assert week.previous().start == local(2026, 2, 16)
    assert week.label == "week 09, 23 February 2026 to 1 March 2026"
    month = periods.last("month", now=now)
    assert (month.start, month.end) == (local(2026, 2, 1), local(2026, 3, 1))
    assert month.label == "February 2026"
    # The calendar month before, not 28 days before.
    assert (month.previous().start, month.previous().end) == (local(2026, 1, 1), local(2026, 2, 1))
    january = periods.last("month", now=local(2026, 1, 15))
    assert (january.start, january.end) == (local(2025, 12, 1), local(2026, 1, 1))


def test_a_day_with_a_clock_change_has_23_hours_and_is_compared_with_the_day_before():
    day = periods.last("day", now=local(2026, 3, 30, 8, 0))
    assert day.length == timedelta(hours=23)
    assert day.previous().length == timedelta(hours=24)


def test_a_custom_range_of_dates_includes_the_end_day_and_compares_with_as_long_before():
    period = periods.custom("2026-03-02", "2026-03-08")
    assert (period.start, period.end) == (local(2026, 3, 2), local(2026, 3, 9))
    assert period.label == "2 March 2026 to 8 March 2026"
    previous = period.previous()
    assert (previous.start, previous.end) == (local(2026, 2, 23), local(2026, 3, 2))


def test_a_custom_range_of_times_excludes_its_end():
    period = periods.custom("2026-03-02T08:00", "2026-03-02T10:30:00+00:00")
    assert period.start == local(2026, 3, 2, 8, 0)  # no offset: the report's zone
    assert period.end == datetime(2026, 3, 2, 10, 30, tzinfo=UTC)
    assert period.previous().start == local(2026, 3, 2, 4, 30)  # 3.5 hours before


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-03-08", "2026-03-02", "start must be before end"),
        ("yesterday", "2026-03-02", "start must be a date (2026-03-01) or an ISO 8601 time"),
        ("2026-03-02", "", "end is missing"),
        ("2026-02-30", "2026-03-02", "start must be a date"),
        ("1900-01-01", "2026-03-02", "start is out of range"),
        ("2000-01-01", "2026-03-02", "a report covers at most 3660 days"),
    ],
)
def test_a_bad_range_says_what_is_wrong(start, end, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        periods.custom(start, end)


def test_an_unknown_period_is_refused():
    with pytest.raises(ValueError, match="period must be one of day, week, month"):
        periods.last("year")
