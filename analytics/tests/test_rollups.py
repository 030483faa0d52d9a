"""Rollups are kept by the writer in the transaction of the messages they count: through the
proxy, across a spool replay (even one that repeats rows), and rebuilt by command."""

import json

import httpx
import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db.models import Sum

from proxy.models import Message, MessageRollup, SeriesRollup, UserRollup, UserTotalRollup
from proxy.recorder import Recorder
from proxy.tests.test_recorder import database_locked

from .conftest import message_fields

pytestmark = pytest.mark.django_db(transaction=True)


def rolled_up(model=MessageRollup) -> dict[int, int]:
    """Messages counted at each resolution."""
    return dict(model.objects.values_list("bucket_seconds").annotate(Sum("messages")).order_by())


def generate(url: str, count: int) -> None:
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            body = {"model": "llama3.2", "prompt": "Hi", "stream": False}
            assert client.post(f"{url}/api/generate", json=body).status_code == 200


def test_every_message_through_the_proxy_is_counted_once_at_each_resolution(server):
    generate(server.url, 6)
    server.flush()

    assert Message.objects.count() == 6
    assert rolled_up() == {60: 6, 3600: 6, 86400: 6}
    assert rolled_up(UserRollup) == {3600: 6, 86400: 6}
    assert rolled_up(SeriesRollup) == {60: 6, 3600: 6, 86400: 6}
    assert rolled_up(UserTotalRollup) == {3600: 6, 86400: 6}
    tokens = Message.objects.aggregate(total=Sum("output_tokens"))["total"]
    assert (
        MessageRollup.objects.filter(bucket_seconds=60).aggregate(total=Sum("output_tokens"))[
            "total"
        ]
        == tokens
    )


def test_messages_replayed_from_the_spool_are_counted_once(proxy_settings, start_proxy, wait_until):
    proxy_settings.RECORDER_DB_TIMEOUT = 0.2
    server = start_proxy()
    with database_locked():
        generate(server.url, 4)
        server.flush()
        assert list(proxy_settings.RECORDER_SPOOL_DIR.glob("spool-*"))

    wait_until(lambda: Message.objects.count() == 4)
    server.flush()
    assert rolled_up() == {60: 4, 3600: 4, 86400: 4}


def test_a_replay_that_repeats_written_rows_counts_only_the_new_ones(proxy_settings):
    recorder = Recorder()
    written = [message_fields() for _ in range(3)]
    assert recorder._insert(written)
    new = [message_fields() for _ in range(2)]
    # As a replay that crashed after its insert committed would leave it: some rows again.
    recorder._spool([json.loads(json.dumps(row, default=str)) for row in written + new])

    recorder._replay_if_due()

    assert Message.objects.count() == 5
    assert rolled_up() == {60: 5, 3600: 5, 86400: 5}
    assert not list(recorder.spool_dir.glob("spool-*"))


def test_rebuild_rollups_restores_them_from_the_messages(api, write):
    write(*({"user": f"u{i % 3}", "timestamp": message_fields()["timestamp"]} for i in range(9)))
    before = api.get("/aggregations", params={"interval": "1m"}).json()
    for rollup in (MessageRollup, UserRollup, SeriesRollup, UserTotalRollup):
        rollup.objects.all().delete()
    assert api.get("/aggregations").json()["total_messages"] == 0

    call_command("rebuild_rollups")

    cache.clear()  # the figures of a minute ago, cached
    assert api.get("/aggregations", params={"interval": "1m"}).json() == before
