"""Nothing lost, nothing blocked: a database that is away, a full queue, a shutdown under load."""

import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from django.db import connection

from proxy.models import Message

pytestmark = pytest.mark.django_db(transaction=True)

GENERATE = {"model": "llama3.2", "prompt": "Hi", "stream": True}


@contextlib.contextmanager
def database_locked():
    """Hold the messages table locked from another connection, as a long migration or a
    stuck transaction would, until the block ends."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        other = sqlite3.connect(params["NAME"], isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
    else:
        other = psycopg.connect(
            host=params["HOST"],
            port=params["PORT"] or 5432,
            dbname=params["NAME"],
            user=params["USER"],
            password=params["PASSWORD"],
        )
        other.execute("LOCK TABLE proxy_message IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        other.rollback()
        other.close()


@pytest.fixture
def impatient_recorder(proxy_settings):
    proxy_settings.RECORDER_DB_TIMEOUT = 0.2
    return proxy_settings


def stream_all(url: str, count: int, headers: dict | None = None) -> list[int]:
    def one(_):
        with httpx.Client(timeout=30) as client:
            response = client.post(f"{url}/api/generate", json=GENERATE, headers=headers or {})
            return response.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


def spool_files(settings) -> list:
    return list(settings.RECORDER_SPOOL_DIR.glob("spool-*"))


def test_it_spools_while_the_database_is_locked_and_replays_once_it_is_free(
    impatient_recorder, start_proxy, wait_until
):
    proxy = start_proxy()
    with database_locked():
        statuses = stream_all(proxy.url, 12)
        proxy.flush()
        assert spool_files(impatient_recorder)

    assert statuses == [200] * 12
    wait_until(lambda: Message.objects.count() == 12)
    wait_until(lambda: not spool_files(impatient_recorder))
    assert Message.objects.filter(status="success", output_tokens__gt=0).count() == 12


def test_a_full_queue_spills_to_the_spool_instead_of_blocking_or_dropping(
    impatient_recorder, start_proxy, wait_until
):
    impatient_recorder.RECORDER_QUEUE_SIZE = 2
    impatient_recorder.RECORDER_BATCH_SIZE = 1
    proxy = start_proxy()
    with database_locked():
        statuses = stream_all(proxy.url, 10)
        proxy.flush()

    assert statuses == [200] * 10
    wait_until(lambda: Message.objects.count() == 10)
    assert proxy.forwarder.recorder.dropped == 0


def test_a_graceful_shutdown_under_load_loses_no_message(start_proxy, simulator):
    proxy = start_proxy()
    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = [
            pool.submit(
                httpx.post,
                f"{proxy.url}/api/generate",
                json=GENERATE,
                headers={"X-Sim-TPS": "40", "X-Sim-Tokens": "40"},
                timeout=30,
            )
            for _ in range(20)
        ]
        simulator.wait_for(requests=20)
        proxy.stop()
        responses = [future.result() for future in futures]

    assert [response.status_code for response in responses] == [200] * 20
    assert Message.objects.count() == 20
    assert set(Message.objects.values_list("status", flat=True)) == {"success"}


def test_a_shutdown_while_the_database_is_away_leaves_a_spool_the_next_start_replays(
    impatient_recorder, start_proxy, wait_until
):
    first = start_proxy()
    with database_locked():
        stream_all(first.url, 5)
        first.stop()
        assert spool_files(impatient_recorder)
    assert Message.objects.count() == 0

    start_proxy()

    wait_until(lambda: Message.objects.count() == 5)
    wait_until(lambda: not spool_files(impatient_recorder))
