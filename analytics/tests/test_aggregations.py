"""/analytics/aggregations and /analytics/models: figures read from rollups agree with the
messages they sum, whatever the time range; series, percentiles and their error bounds."""

import math
import os
import random
import socket
import subprocess
import sys
from collections import Counter
from datetime import timedelta

import ollama
import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics.aggregations import EPOCH, MICROSECOND, Aggregation, plan
from analytics.filters import MessageFilter
from analytics.schemas import Aggregations, ModelList
from proxy.models import Message

from .conftest import T0

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = ("llama3.2", "qwen3", "all-minilm")
USERS = ("alice", "bob", "carol", "dave", "10.0.0.7")


def varied_messages(count: int, seed: int = 7) -> list[dict]:
    """Messages spread over ~50 hours at odd seconds, with every kind of missing value."""
    chance = random.Random(seed)
    rows = []
    for _ in range(count):
        output_tokens = chance.choice([None, chance.randint(1, 900)])
        rows.append(
            {
                "timestamp": T0
                + timedelta(seconds=chance.uniform(-3600, 48 * 3600), microseconds=1),
                "model": chance.choice(MODELS),
                "status": chance.choices(["success", "error", "cancelled"], [8, 1, 1])[0],
                "category": chance.choice(["chat", "code", "embedding", "other"]),
                "endpoint": chance.choice(["/api/chat", "/api/generate", "/v1/chat/completions"]),
                "user": chance.choice(USERS),
                "input_tokens": chance.choice([None, chance.randint(1, 4000)]),
                "output_tokens": output_tokens,
                "latency_seconds": chance.lognormvariate(0, 1.2),
                "ttft_seconds": chance.choice([None, chance.uniform(0.01, 3)]),
                "tokens_per_second": chance.choice([None, chance.uniform(5, 120)])
                if output_tokens
                else None,
                "cost_usd": chance.choice([None, round(chance.uniform(0, 0.05), 6)]),
            }
        )
    return rows


def rounded(value):
    """Floats to 6 decimals, so sums taken in another order compare equal."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def aggregate(api, **params) -> dict:
    response = api.get("/aggregations", params=params)
    assert response.status_code == 200, response.text
    return response.json()


EPOCH_T0 = T0.timestamp()
WINDOWS = [
    {},
    {"start_time": EPOCH_T0},
    {"end_time": EPOCH_T0 + 7200},
    {"start_time": EPOCH_T0 + 1.5, "end_time": EPOCH_T0 + 30.25},  # inside one minute
    {"start_time": EPOCH_T0 + 59.999, "end_time": EPOCH_T0 + 3600},  # ends on a boundary
    {"start_time": EPOCH_T0 - 1234.5, "end_time": EPOCH_T0 + 86400 * 1.5 + 77.7},
    {"start_time": "2026-03-02T00:00:00Z", "end_time": "2026-03-03T23:59:59.999999Z"},
    {"start_time": EPOCH_T0 + 3 * 3600 + 17, "end_time": EPOCH_T0 + 40 * 3600 + 3},
    # Whole days less seconds at both ends (read as days minus the messages of those seconds).
    {"start_time": EPOCH_T0 + 12 * 3600 + 37.25, "end_time": EPOCH_T0 + 36 * 3600 - 21.5},
]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize(
    "criteria",
    [
        {},  # series and user figures from the narrow rollups
        {"status": "error"},  # series from the narrow rollups, user figures from the wide
        {"model": "qwen3"},
        {"model": "qwen3", "status": "cancelled"},  # user figures from rollups too
        {"status": "error", "category": "code"},  # user figures from messages
    ],
)
def test_rollups_give_the_same_figures_as_scanning_the_messages(api, write, window, criteria):
    write(*varied_messages(300))

    from_rollups = aggregate(api, **window, **criteria, interval="1h", top_users=3)
    # min_latency=0 matches every message but has no rollup column: a message scan.
    from_messages = aggregate(api, **window, **criteria, interval="1h", top_users=3, min_latency=0)

    assert (from_rollups.pop("source"), from_messages.pop("source")) == ("rollups", "messages")
    assert rounded(from_rollups) == rounded(from_messages)


@pytest.mark.parametrize("window", WINDOWS[:6])
def test_the_figures_are_those_of_the_messages_in_the_range(api, write, window):
    rows = varied_messages(300)
    write(*rows)
    messages = Message.objects.all()
    if "start_time" in window:
        messages = messages.filter(
            timestamp__gte=T0 + timedelta(seconds=window["start_time"] - EPOCH_T0)
        )
    if "end_time" in window:
        messages = messages.filter(
            timestamp__lte=T0 + timedelta(seconds=window["end_time"] - EPOCH_T0)
        )
    expected = list(messages)

    figures = aggregate(api, **window)

    assert figures["total_messages"] == len(expected)
    assert figures["unique_users"] == len({m.user for m in expected})
    statuses = Counter(m.status for m in expected)
    assert {row["status"]: row["messages"] for row in figures["by_status"]} == statuses
    assert figures["total_cost"] == pytest.approx(sum(m.cost_usd or 0 for m in expected))
    tokens = [m.input_tokens for m in expected if m.input_tokens is not None]
    assert figures["total_input_tokens"] == sum(tokens)
    assert figures["avg_input_tokens"] == pytest.approx(
        sum(tokens) / len(tokens) if tokens else None
    )
    assert sum(point["messages"] for point in figures["messages_by_time"]) == len(expected)
    assert sum(point["errors"] for point in figures["messages_by_time"]) == statuses["error"]
    top = Counter(m.user for m in expected).most_common()
    assert [(row["user"], row["messages"]) for row in figures["top_users"]] == sorted(
        top, key=lambda pair: (-pair[1], pair[0])
    )


def test_seconds_subtracted_from_a_whole_day_take_their_users_with_them(api, write):
    midnight = T0 + timedelta(hours=12)
    write(
        {"timestamp": midnight + timedelta(seconds=10), "user": "early", "cost_usd": 0.1},
        {"timestamp": midnight + timedelta(hours=5), "user": "late"},
        {"timestamp": midnight + timedelta(hours=23, minutes=59, seconds=50), "user": "night"},
    )
    day = {
        "start_time": midnight.timestamp() + 37,
        "end_time": midnight.timestamp() + 86400 - 30,
        "interval": "1h",
    }

    figures = aggregate(api, **day)
    scanned = aggregate(api, **day, min_latency=0)

    assert [row["user"] for row in figures["top_users"]] == ["late"]
    assert figures["unique_users"] == 1
    assert figures["total_cost"] == pytest.approx(0.001)
    figures.pop("source"), scanned.pop("source")
    assert rounded(figures) == rounded(scanned)


def moment_at(micros: int | None):
    return None if micros is None else EPOCH + micros * MICROSECOND


def coverage(cut, micros: int) -> int:
    """How many times a plan counts the moment `micros`: each span or edge adds its sign."""
    seconds = micros // 1_000_000
    count = 0
    for sign, size, start, end in cut.spans:
        bucket = seconds - seconds % size
        if (start is None or bucket >= start) and (end is None or bucket < end):
            count += sign
    for sign, start, end in cut.edges:
        if (start is None or micros >= start) and (end is None or micros < end):
            count += sign
    return count


def test_a_plan_counts_every_moment_of_its_range_once_and_nothing_else():
    chance = random.Random(3)
    day = 86400 * 1_000_000
    for _ in range(300):
        resolutions = chance.choice([(60,), (60, 3600), (60, 3600, 86400), (3600, 86400)])
        start = chance.choice([None, chance.randrange(0, 40 * day)])
        length = chance.choice([chance.randrange(0, 90 * 1_000_000), chance.randrange(0, 9 * day)])
        end = chance.choice([None, (start or 0) + length])
        cut = plan(moment_at(start), moment_at(end), resolutions)

        low = start if start is not None else 0
        high = end + 1 if end is not None else 60 * day
        bounds = {low, high}
        for _, _, first, last in cut.spans:
            bounds |= {low if first is None else first * 1_000_000}
            bounds |= {high if last is None else last * 1_000_000}
        bounds |= {edge for _, *ends in cut.edges for edge in ends if edge is not None}
        for bound in bounds:
            for moment in (bound - 1, bound, bound + 1):
                inside = (start is None or moment >= start) and (end is None or moment <= end)
                assert coverage(cut, moment) == int(inside), (start, end, resolutions, moment)


def test_a_range_from_just_after_midnight_reads_the_days_less_those_seconds():
    midnight = T0 + timedelta(hours=12)

    cut = plan(midnight + timedelta(seconds=20), midnight + timedelta(days=7), (60, 3600, 86400))

    day = int(midnight.timestamp())
    week = day + 7 * 86400
    assert cut.spans == [(1, 86400, day, week)]
    assert cut.edges == [
        (-1, day * 1_000_000, (day + 20) * 1_000_000),  # the 20 s before the start
        (1, week * 1_000_000, week * 1_000_000 + 1),  # the end, included
    ]


def test_each_percentile_lies_within_the_bounds_it_states(api, write):
    rows = varied_messages(500, seed=11)
    write(*rows)
    latencies = sorted(row["latency_seconds"] for row in rows)
    ttfts = sorted(row["ttft_seconds"] for row in rows if row["ttft_seconds"] is not None)

    figures = aggregate(api)

    for stated, values in (
        (figures["latency_percentiles"], latencies),
        (figures["ttft_percentiles"], ttfts),
    ):
        for name, quantile in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            true = values[math.ceil(quantile * len(values)) - 1]
            lower, upper = stated["bounds"][name]
            assert lower <= true <= (upper if upper is not None else math.inf), name
            assert lower <= stated[name] <= (upper if upper is not None else math.inf), name


def test_percentiles_of_nothing_are_null(api):
    figures = aggregate(api)

    assert figures["total_messages"] == 0
    assert figures["latency_percentiles"] == {
        "p50": None,
        "p95": None,
        "p99": None,
        "bounds": {"p50": None, "p95": None, "p99": None},
    }
    assert figures["messages_by_time"] == []
    assert figures["avg_latency"] is None


@pytest.mark.parametrize(
    ("interval", "times"),
    [
        ("1m", ["2026-03-02T12:00:00Z", "2026-03-02T12:01:00Z", "2026-03-02T12:02:00Z"]),
        ("5m", ["2026-03-02T12:00:00Z"]),
        ("1h", ["2026-03-02T12:00:00Z"]),
        ("1d", ["2026-03-02T00:00:00Z"]),
        ("1w", ["2026-03-02T00:00:00Z"]),  # weeks start on Monday (UTC)
    ],
)
def test_the_series_has_one_point_per_interval_from_start_to_end(api, write, interval, times):
    write(
        {"timestamp": T0 + timedelta(seconds=5)},
        {"timestamp": T0 + timedelta(seconds=150), "status": "error"},
    )

    figures = aggregate(api, interval=interval, start_time=EPOCH_T0, end_time=EPOCH_T0 + 179)

    series = figures["messages_by_time"]
    assert [point["time"] for point in series] == times
    assert sum(point["messages"] for point in series) == 2
    assert sum(point["errors"] for point in series) == 1


def test_empty_intervals_are_points_with_zero(api, write):
    write({"timestamp": T0}, {"timestamp": T0 + timedelta(hours=3)})

    series = aggregate(api, interval="1h")["messages_by_time"]

    assert [point["messages"] for point in series] == [1, 0, 0, 1]


def test_a_week_on_sunday_belongs_to_the_week_that_began_on_monday(api, write):
    write({"timestamp": T0 + timedelta(days=6)})  # Sunday 2026-03-08

    series = aggregate(api, interval="1w")["messages_by_time"]

    assert [point["time"] for point in series] == ["2026-03-02T00:00:00Z"]


def test_breakdowns_by_category_model_status_endpoint_and_rates(api, write):
    write(
        {"model": "llama3.2", "category": "code", "output_tokens": 100, "tokens_per_second": 50.0},
        {"model": "llama3.2", "category": "chat", "output_tokens": 300, "tokens_per_second": 100.0},
        {"model": "qwen3", "category": "chat", "status": "error", "endpoint": "/api/generate"},
    )

    figures = aggregate(api)

    assert [(row["category"], row["messages"]) for row in figures["by_category"]] == [
        ("chat", 2),
        ("code", 1),
    ]
    assert [(row["model"], row["messages"]) for row in figures["by_model"]] == [
        ("llama3.2", 2),
        ("qwen3", 1),
    ]
    assert {row["status"]: row["messages"] for row in figures["by_status"]} == {
        "success": 2,
        "error": 1,
    }
    assert {row["endpoint"]: row["messages"] for row in figures["by_endpoint"]} == {
        "/api/chat": 2,
        "/api/generate": 1,
    }
    rates = {
        row["model"]: row["tokens_per_second"] for row in figures["tokens_per_second_by_model"]
    }
    # 400 tokens in 2 + 3 seconds: weighted by tokens, not an average of the two rates.
    assert rates["llama3.2"] == pytest.approx(400 / (100 / 50 + 300 / 100))


def test_top_users_are_ranked_and_cut(api, write):
    write(*({"user": user} for user in ["a", "b", "b", "c", "c", "c"]))

    figures = aggregate(api, top_users=2)

    assert [(row["user"], row["messages"]) for row in figures["top_users"]] == [("c", 3), ("b", 2)]
    assert figures["unique_users"] == 3


@pytest.mark.parametrize(
    ("params", "source"),
    [
        ({}, "rollups"),
        (
            {"model": "qwen3", "status": "error", "category": "code", "endpoint": "/api/chat"},
            "rollups",
        ),
        ({"start_time": EPOCH_T0 + 0.5}, "rollups"),
        ({"search": "sky"}, "messages"),
        ({"user": "alice"}, "messages"),
        ({"min_input_tokens": 1}, "messages"),
        ({"max_cost": 1}, "messages"),
    ],
)
def test_the_response_says_whether_rollups_or_messages_were_read(api, write, params, source):
    write({})

    assert aggregate(api, **params)["source"] == source


ROLLUP_TABLES = {
    "proxy_messagerollup",
    "proxy_userrollup",
    "proxy_seriesrollup",
    "proxy_usertotalrollup",
}


@pytest.mark.parametrize(
    ("criteria", "series", "users"),
    [
        ({}, "proxy_seriesrollup", "proxy_usertotalrollup"),
        ({"status": "error"}, "proxy_seriesrollup", "proxy_userrollup"),
        ({"model": "qwen3"}, "proxy_messagerollup", "proxy_userrollup"),
        ({"endpoint": "/api/chat"}, "proxy_messagerollup", "proxy_message"),
    ],
)
def test_the_narrow_rollups_are_read_when_the_filter_names_nothing_they_lack(
    write, criteria, series, users
):
    write({})
    aggregation = Aggregation(MessageFilter(**criteria, start_time=T0 - timedelta(days=2)))

    for read, table in ((lambda: aggregation.by_time("1h"), series), (aggregation.by_user, users)):
        with CaptureQueriesContext(connection) as queries:
            read()
        sql = queries.captured_queries[-1]["sql"]  # the last: the statement of the sums
        assert {name for name in ROLLUP_TABLES if f'"{name}"' in sql} == ({table} & ROLLUP_TABLES)


def test_filters_forcing_a_scan_give_their_own_figures(api, write):
    write({"user": "alice", "prompt": "a zebra"}, {"user": "bob"}, {"user": "alice"})

    assert aggregate(api, user="alice")["total_messages"] == 2
    assert aggregate(api, search="zebra")["total_messages"] == 1
    assert aggregate(api, search="zebra", user="bob")["total_messages"] == 0


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"interval": "2h"}, "'1m', '5m', '1h', '1d' or '1w'"),
        ({"interval": "1m", "start_time": 0, "end_time": 86400 * 365}, "at most 5000"),
        ({"top_users": 0}, "greater than or equal to 1"),
        ({"top_users": 101}, "less than or equal to 100"),
        ({"end_time": "tomorrow"}, "epoch seconds"),
    ],
)
def test_bad_aggregation_input_gets_a_422(api, params, complaint):
    response = api.get("/aggregations", params=params)

    assert response.status_code == 422
    assert complaint in response.text


def test_an_open_range_counts_its_points_from_the_data(api, write):
    write({"timestamp": T0}, {"timestamp": T0 + timedelta(days=30)})

    assert api.get("/aggregations", params={"interval": "1m"}).status_code == 422
    assert len(aggregate(api, interval="1d")["messages_by_time"]) == 31


def test_aggregations_are_cached_briefly(api, write, settings):
    settings.ANALYTICS_CACHE_SECONDS = 60
    write({})
    assert aggregate(api)["total_messages"] == 1

    write({})

    assert aggregate(api)["total_messages"] == 1  # the cached figures
    assert aggregate(api, interval="1d")["total_messages"] == 2  # other parameters, other key


def test_models_lists_every_model_with_its_figures(api, write):
    write(
        {"model": "llama3.2", "latency_seconds": 1.0, "cost_usd": 0.5},
        {"model": "llama3.2", "latency_seconds": 3.0, "cost_usd": 0.25},
        {"model": "qwen3", "input_tokens": None},
    )

    response = api.get("/models")

    assert response.status_code == 200
    models = {row["model"]: row for row in response.json()["models"]}
    assert list(models) == ["llama3.2", "qwen3"]
    assert models["llama3.2"]["messages"] == 2
    assert models["llama3.2"]["cost"] == pytest.approx(0.75)
    assert models["llama3.2"]["avg_latency"] == pytest.approx(2.0)
    assert 0.75 <= models["llama3.2"]["p50_latency"] <= 1.5
    assert models["qwen3"]["avg_input_tokens"] is None


def test_models_takes_the_filters(api, write):
    write({"model": "llama3.2", "status": "error"}, {"model": "qwen3"})

    models = api.get("/models", params={"status": "error"}).json()["models"]

    assert [row["model"] for row in models] == ["llama3.2"]


def test_messages_recorded_through_the_proxy_are_in_the_aggregations(api, server, default_rules):
    client = ollama.Client(host=server.url)
    question = [{"role": "user", "content": "Write a python function that adds two numbers"}]
    for _ in range(3):
        client.chat(model="llama3.2", messages=question)
    client.embed(model="all-minilm", input="hello")
    with pytest.raises(ollama.ResponseError):
        ollama.Client(host=server.url, headers={"X-Sim-Fail": "500"}).generate(
            model="qwen3", prompt="Hi"
        )
    server.flush()

    figures = aggregate(api)
    scanned = aggregate(api, min_latency=0)

    assert figures["total_messages"] == Message.objects.count() == 5
    assert {row["status"]: row["messages"] for row in figures["by_status"]} == {
        "success": 4,
        "error": 1,
    }
    assert {row["category"]: row["messages"] for row in figures["by_category"]} == {
        "code": 3,
        "embedding": 1,
        "completion": 1,
    }
    assert figures["total_output_tokens"] == sum(
        Message.objects.exclude(output_tokens=None).values_list("output_tokens", flat=True)
    )
    figures.pop("source"), scanned.pop("source")
    assert rounded(figures) == rounded(scanned)


def run_django(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "--verbosity", "0", "-c", code],
        cwd=settings.BASE_DIR,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.needs_binary("redis-server")
def test_with_redis_url_the_cache_is_redis_shared_by_every_process(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            tmp_path,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        written = run_django(
            "from django.core.cache import cache; import time\n"
            "for _ in range(100):\n"
            "    try:\n        cache.set('shared', 42); break\n"
            "    except Exception: time.sleep(0.05)\n"
            "from django.core.cache import caches; print(type(caches['default']).__name__)",
            REDIS_URL=url,
        )
        read = run_django(
            "from django.core.cache import cache; print(cache.get('shared'))", REDIS_URL=url
        )
    finally:
        redis.terminate()
        redis.wait()

    assert written.stdout.split() == ["RedisCache"], written.stderr
    assert read.stdout.split() == ["42"], read.stderr


def test_without_redis_url_the_cache_is_per_process_memory():
    shown = run_django(
        "from django.core.cache import caches; print(type(caches['default']).__name__)",
        REDIS_URL="",
    )

    assert shown.stdout.split() == ["LocMemCache"], shown.stderr


def test_a_redis_url_that_is_not_one_stops_the_start():
    shown = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=settings.BASE_DIR,
        env=os.environ | {"REDIS_URL": "http://127.0.0.1:6379"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert shown.returncode != 0
    assert "REDIS_URL must be a redis://" in shown.stderr


def test_the_responses_have_exactly_the_documented_shape(api, write):
    write(*varied_messages(60))

    for params in ({}, {"min_latency": 0, "interval": "1d"}):
        figures = aggregate(api, **params)
        assert Aggregations.model_validate(figures).model_dump(mode="json") == figures
    models = api.get("/models").json()
    assert ModelList.model_validate(models).model_dump(mode="json") == models
