"""analytics.sums: the sums an aggregation reads from messages are those the writer adds to
the rollups, and one statement adds up every source it is given."""

from datetime import timedelta

import pytest

from analytics.sums import Sums, epoch_seconds, time_bucket
from proxy.models import (
    HISTOGRAM_BOUNDS,
    ROLLUP_SUMS,
    USER_ROLLUP_SUMS,
    Message,
    MessageRollup,
    SeriesRollup,
    UserRollup,
    UserTotalRollup,
)

from .conftest import T0

pytestmark = pytest.mark.django_db(transaction=True)

DIMENSIONS = ("model", "status", "category", "endpoint")
HOUR = int(T0.timestamp()) // 3600 * 3600


def rounded(grouped: dict) -> dict:
    """Float sums to 9 decimals, so sums taken in another order compare equal."""
    return {
        key: {name: round(value, 9) for name, value in sums.items()}
        for key, sums in grouped.items()
    }


def awkward_messages() -> list[dict]:
    """Values on every histogram bound and either side of it, missing values, rates of 0."""
    rows = []
    for index, bound in enumerate((*HISTOGRAM_BOUNDS, 301.0)):
        for latency in (bound * 0.999, bound, bound * 1.001):
            rows.append(
                {
                    "timestamp": T0 + timedelta(seconds=index * 61 + 0.5),
                    "model": ("llama3.2", "qwen3")[index % 2],
                    "status": ("success", "error", "cancelled")[index % 3],
                    "latency_seconds": latency,
                    "ttft_seconds": None if index % 4 == 0 else latency / 2,
                    "input_tokens": None if index % 5 == 0 else index,
                    "output_tokens": None if index % 6 == 0 else 3 * index,
                    "tokens_per_second": (0.0, None, 12.5)[index % 3],
                    "cost_usd": None if index % 7 == 0 else index / 1000,
                }
            )
    return rows


def test_message_sums_are_the_sums_the_writer_adds_to_rollups(write):
    write(*awkward_messages())

    from_messages = Sums(DIMENSIONS, ROLLUP_SUMS)
    from_messages.messages(Message.objects.all())
    from_rollups = Sums(DIMENSIONS, ROLLUP_SUMS)
    from_rollups.rollups(MessageRollup, (3600, None, None), {})

    expected = from_rollups.read()
    assert sum(sums["messages"] for sums in expected.values()) == len(awkward_messages())
    assert rounded(from_messages.read()) == rounded(expected)


def test_user_sums_are_the_sums_of_the_user_rollups(write):
    write(*awkward_messages(), {"user": "bob", "input_tokens": None, "cost_usd": None})

    from_messages = Sums(("user",), USER_ROLLUP_SUMS)
    from_messages.messages(Message.objects.all())
    from_rollups = Sums(("user",), USER_ROLLUP_SUMS)
    from_rollups.rollups(UserRollup, (86400, None, None), {})

    assert rounded(from_messages.read()) == rounded(from_rollups.read())
    assert from_messages.read()[("bob",)]["cost_usd"] == 0


@pytest.mark.parametrize(
    ("rollup", "keys", "seconds"),
    [
        (SeriesRollup, ("time", "status"), 60),
        (SeriesRollup, ("time", "status"), 3600),
        (UserTotalRollup, ("user",), 3600),
        (UserTotalRollup, ("user",), 86400),
    ],
)
def test_the_narrow_rollups_sum_what_the_messages_do(write, rollup, keys, seconds):
    write(*awkward_messages(), {"user": "bob", "input_tokens": None, "cost_usd": None})
    time = {"time": time_bucket(epoch_seconds("m.timestamp"), seconds)}

    from_messages = Sums(keys, USER_ROLLUP_SUMS)
    from_messages.messages(Message.objects.all(), time)
    from_rollups = Sums(keys, USER_ROLLUP_SUMS)
    from_rollups.rollups(rollup, (seconds, None, None), {}, {"time": "bucket_start"})

    expected = from_messages.read()
    assert len(expected) > 1
    assert rounded(from_rollups.read()) == rounded(expected)


def test_one_statement_adds_up_its_sources_by_key(write):
    write(
        {"timestamp": T0 + timedelta(seconds=10), "model": "qwen3"},
        {"timestamp": T0 + timedelta(seconds=70), "model": "qwen3", "status": "error"},
        {"timestamp": T0 + timedelta(seconds=3601), "model": "llama3.2"},
    )
    qwen = {"model": "qwen3"}
    epoch = epoch_seconds("m.timestamp")

    statement = Sums(("time", "status"), ("messages", "output_tokens", "cost_usd"))
    # The first minute from the rollups, the rest of the hour from the messages.
    statement.rollups(
        MessageRollup, (60, HOUR, HOUR + 60), qwen, {"time": time_bucket("bucket_start", 3600)}
    )
    statement.messages(
        Message.objects.filter(model="qwen3", timestamp__gte=T0 + timedelta(seconds=60)),
        {"time": time_bucket(epoch, 3600)},
    )

    assert statement.read() == {
        (HOUR, "success"): {"messages": 1, "output_tokens": 40, "cost_usd": pytest.approx(0.001)},
        (HOUR, "error"): {"messages": 1, "output_tokens": 40, "cost_usd": pytest.approx(0.001)},
    }


def test_a_statement_without_sources_or_matches_reads_nothing(write):
    write({})
    statement = Sums(DIMENSIONS, ROLLUP_SUMS)
    assert statement.read() == {}

    statement.messages(Message.objects.filter(pk__in=[]))  # no SQL can match: no part

    assert statement.read() == {}
