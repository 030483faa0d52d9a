"""The report's numbers from known messages: totals and their change against the previous
period, top models, users and categories, buckets in the local zone, error spikes with their
examples and links, slowest requests."""

from datetime import timedelta

import pytest

from proxy.models import HISTOGRAM_BOUNDS
from reports import periods
from reports.report import build

from .conftest import local

pytestmark = pytest.mark.django_db

BASE = "https://monitor.example.com"
MICROSECOND = timedelta(microseconds=1)


def llama(moment, **overrides):
    """A successful llama3.2 chat of alice: 10 tokens in, 100 out at 50 tok/s, 1 s, 1 cent."""
    return {
        "timestamp": moment,
        "model": "llama3.2",
        "user": "alice",
        "category": "chat",
        "input_tokens": 10,
        "output_tokens": 100,
        "tokens_per_second": 50.0,
        "latency_seconds": 1.0,
        "ttft_seconds": 0.2,
        "cost_usd": 0.01,
        **overrides,
    }


def failure(moment, **overrides):
    return {
        "timestamp": moment,
        "model": "qwen3",
        "user": "bob",
        "category": "code",
        "status": "error",
        "http_status": 500,
        "error": "model runner crashed",
        "input_tokens": 30,
        "output_tokens": None,
        "tokens_per_second": None,
        "latency_seconds": 0.5,
        "ttft_seconds": None,
        "cost_usd": None,
        **overrides,
    }


@pytest.fixture
def known(write, monday):
    """Monday: 4 llama3.2 chats at 10:00, a qwen3 error at 10:30, carol at the very start and
    a chat at the very end (Tuesday's). Sunday: 2 llama3.2 chats and one at its last moment."""
    ten = local(2026, 3, 2, 10, 0)
    return write(
        *(llama(ten + timedelta(seconds=index)) for index in range(4)),
        failure(local(2026, 3, 2, 10, 30)),
        llama(monday.start, user="carol", output_tokens=300, tokens_per_second=100.0),
        llama(monday.end, user="tuesday"),
        llama(local(2026, 3, 1, 9, 0)),
        llama(local(2026, 3, 1, 9, 5), cost_usd=0.04),
        llama(monday.start - MICROSECOND, user="dave"),
    )


def test_totals_count_the_period_and_compare_with_the_one_before(known, monday):
    report = build(monday, base_url=BASE)
    totals = report.totals
    assert (totals["messages"].current, totals["messages"].previous) == (6, 3)
    assert totals["messages"].change == pytest.approx(1.0)
    assert totals["messages"].trend == "up"
    assert (totals["errors"].current, totals["errors"].previous) == (1, 0)
    assert totals["errors"].trend == "new"
    assert totals["error_rate"].current == pytest.approx(1 / 6)
    assert totals["error_rate"].change == pytest.approx(1 / 6)  # in points, from 0
    assert totals["error_rate"].good is False  # more errors is worse
    assert (totals["users"].current, totals["users"].previous) == (3, 2)  # alice, bob, carol
    assert totals["input_tokens"].current == 5 * 10 + 30
    assert totals["output_tokens"].current == 4 * 100 + 300
    assert totals["cost"].current == pytest.approx(0.05)
    assert totals["cost"].previous == pytest.approx(0.06)
    assert totals["cost"].good is True  # cheaper
    # 700 tokens in 4 * 2 s + 3 s, weighted by tokens.
    assert totals["tokens_per_second"].current == pytest.approx(700 / 11)
    assert totals["tokens_per_second"].previous == pytest.approx(50.0)
    assert totals["avg_latency"].current == pytest.approx(5.5 / 6)
    assert totals["avg_ttft"].current == pytest.approx(0.2)
    # Percentiles lie within the histogram bucket of their true value.
    assert HISTOGRAM_BOUNDS[9] <= totals["p50_latency"].current <= HISTOGRAM_BOUNDS[10]
    assert HISTOGRAM_BOUNDS[4] <= totals["p50_ttft"].current <= HISTOGRAM_BOUNDS[5]
    assert totals["p50_latency"].previous is not None


def test_models_users_and_categories_are_ranked_with_their_change(known, monday):
    report = build(monday, base_url=BASE)
    [llama_row, qwen_row] = report.models
    assert llama_row["name"] == "llama3.2"
    assert (llama_row["messages"].current, llama_row["messages"].previous) == (5, 3)
    assert llama_row["share"] == pytest.approx(5 / 6)
    assert llama_row["errors"] == 0
    assert llama_row["output_tokens"] == 700
    assert llama_row["tokens_per_second"].current == pytest.approx(700 / 11)
    assert (qwen_row["name"], qwen_row["errors"], qwen_row["messages"].trend) == ("qwen3", 1, "new")
    assert qwen_row["error_rate"].current == 1.0
    assert qwen_row["tokens_per_second"].current is None

    assert [(row["name"], row["messages"].current) for row in report.users] == [
        ("alice", 4),
        ("bob", 1),
        ("carol", 1),
    ]
    alice = report.users[0]
    assert alice["messages"].previous == 2
    assert alice["cost"].current == pytest.approx(0.04)
    assert alice["url"].startswith(f"{BASE}/dashboard/?range=custom&start_time=2026-03-01T23")
    assert "user=alice" in alice["url"]

    assert [(row["name"], row["messages"].current) for row in report.categories] == [
        ("chat", 5),
        ("code", 1),
    ]
    assert "category=code" in report.categories[1]["url"]


def test_the_period_is_cut_in_local_hours(known, monday):
    report = build(monday, base_url=BASE)
    assert report.bucket_name == "hour"
    assert len(report.buckets) == 24
    assert report.buckets[0].label == "00:00"
    assert report.buckets[0].figures["messages"] == 1  # carol, at the first microsecond
    ten = report.buckets[10]
    assert (ten.label, ten.figures["messages"], ten.figures["errors"]) == ("10:00", 5, 1)
    assert sum(bucket.figures["messages"] for bucket in report.buckets) == 6


def test_longer_periods_are_cut_in_local_days_weeks_and_months(write):
    write(llama(local(2026, 2, 10, 0, 30)), llama(local(2026, 2, 9, 23, 30)))
    february = build(periods.last("month", now=local(2026, 3, 5)), base_url=BASE)
    assert february.bucket_name == "day"
    assert [bucket.label for bucket in february.buckets[:2]] == ["Sun 1", "Mon 2"]
    assert len(february.buckets) == 28
    assert [b.figures["messages"] for b in february.buckets[8:10]] == [1, 1]  # 9 and 10 Feb
    year = build(periods.custom("2025-03-01", "2026-02-28"), base_url=BASE)
    assert year.bucket_name == "week"
    assert sum(bucket.figures["messages"] for bucket in year.buckets) == 2
    years = build(periods.custom("2024-03-01", "2026-02-28"), base_url=BASE)
    assert (years.bucket_name, len(years.buckets)) == ("month", 24)
    assert years.buckets[-1].label == "Feb 2026"


def test_an_error_spike_is_shown_with_its_newest_errors_and_their_admin_links(write, monday):
    two = local(2026, 3, 2, 14, 0)
    written = write(
        *(llama(local(2026, 3, 2, 9, minute)) for minute in range(10)),
        llama(two),
        *(failure(two + timedelta(minutes=minute)) for minute in range(4)),
        failure(local(2026, 3, 2, 20, 0)),  # one error alone is no spike
        *(llama(local(2026, 3, 1, 9, minute)) for minute in range(10)),
    )
    report = build(monday, base_url=BASE)
    assert report.error_baseline == 0.0  # no errors on Sunday
    [spike] = report.spikes
    assert (spike["label"], spike["messages"], spike["errors"]) == ("14:00", 5, 4)
    assert spike["error_rate"] == pytest.approx(0.8)
    assert spike["models"] == [("qwen3", 4)]
    newest = [message.pk for message in written[11:15]][::-1][:3]
    assert [example["pk"] for example in spike["examples"]] == newest
    assert spike["examples"][0]["url"] == f"{BASE}/admin/proxy/message/{newest[0]}/change/"
    assert "error" not in spike["examples"][0]  # no error text unless asked for
    assert "status=error" in spike["url"]

    quoted = build(monday, base_url=BASE + "/", error_text=True)
    assert quoted.spikes[0]["examples"][0]["error"] == "model runner crashed"
    assert quoted.spikes[0]["examples"][0]["url"].startswith(f"{BASE}/admin/")


def test_the_slowest_requests_of_the_period_come_first(write, monday):
    written = write(
        llama(local(2026, 3, 2, 8, 0), latency_seconds=3.0),
        llama(local(2026, 3, 2, 9, 0), latency_seconds=42.0),
        llama(local(2026, 3, 2, 10, 0), latency_seconds=0.3),
        llama(local(2026, 3, 1, 10, 0), latency_seconds=99.0),  # Sunday: not this report's
    )
    report = build(monday, base_url=BASE)
    assert [row["latency_seconds"] for row in report.slowest] == [42.0, 3.0, 0.3]
    assert report.slowest[0]["url"] == f"{BASE}/admin/proxy/message/{written[1].pk}/change/"
    assert report.slowest[0]["time"].hour == 9  # local time


def test_an_empty_period_is_a_report_too(monday):
    report = build(monday, base_url=BASE)
    assert report.empty
    assert report.totals["messages"].trend == "same"
    assert (report.models, report.users, report.spikes, report.slowest) == ([], [], [], [])
