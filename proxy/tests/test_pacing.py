"""The writer's pacing (proxy.pacing): rests only in a paced thread and only after a piece of
work, statements of a few rows, every message stored as without it; the recorder paces only
while it keeps up."""

import threading

import httpx
import pytest
from django.db import connection, transaction

from proxy import inserts, pacing, rollups
from proxy.models import Message, MessageRollup
from proxy.recorder import Recorder

from .test_inserts import varied_rows


@pytest.fixture
def rests(monkeypatch):
    """Every `breathe()` of a paced thread rests (no minimum piece); the rests are noted."""
    noted = []
    monkeypatch.setattr(pacing, "PIECE_SECONDS", 0.0)
    monkeypatch.setattr(pacing.time, "sleep", lambda seconds: noted.append(seconds))
    return noted


def test_breathe_rests_only_in_a_paced_block(rests):
    pacing.breathe()
    with pacing.paced(False):
        pacing.breathe()
    assert rests == []

    with pacing.paced():
        pacing.breathe()
        pacing.breathe()
        with pacing.paced(False):  # a block inside that must not wait
            pacing.breathe()
        pacing.breathe()
    pacing.breathe()

    assert rests == [pacing.REST_SECONDS] * 3


def test_a_rest_comes_after_a_piece_of_work_not_at_every_call(monkeypatch):
    noted = []
    monkeypatch.setattr(pacing.time, "sleep", lambda seconds: noted.append(seconds))
    clock = [100.0]
    monkeypatch.setattr(pacing.time, "perf_counter", lambda: clock[0])
    with pacing.paced():
        for _ in range(5):  # 0.2 ms a step: a rest once a millisecond of work
            clock[0] += pacing.PIECE_SECONDS / 5
            pacing.breathe()
        assert noted == [pacing.REST_SECONDS]
        clock[0] += pacing.PIECE_SECONDS / 2
        pacing.breathe()
        assert len(noted) == 1


def test_pacing_is_per_thread(rests):
    other_rests = []

    def other():
        pacing.breathe()
        other_rests.append(pacing.rows_per_statement(128))

    with pacing.paced():
        assert pacing.rows_per_statement(128) == pacing.PACED_ROWS
        assert pacing.rows_per_statement(4) == 4
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert rests == []
    assert other_rests == [128]
    assert pacing.rows_per_statement(128) == 128


@pytest.mark.django_db(transaction=True)
def test_a_paced_batch_goes_in_statements_of_a_few_rows_and_stores_the_same(rests, monkeypatch):
    sizes = []
    statements = inserts.statements

    def noting(table, *args, **kwargs):
        for chunk, statement in statements(table, *args, **kwargs):
            if table == Message._meta.db_table:
                sizes.append(len(chunk))
            yield chunk, statement

    monkeypatch.setattr(inserts, "statements", noting)
    rows = varied_rows()[:70]
    with pacing.paced(), transaction.atomic():
        inserts.insert_messages(rows)
        rollups.add(rows)

    # SQLite: powers of two (a few statement texts), PostgreSQL: as many rows as it may.
    assert sizes == ([16, 16, 16, 16, 4, 2] if connection.vendor == "sqlite" else [16] * 4 + [6])
    assert len(rests) >= len(sizes) + len(rows)
    assert sorted(Message.objects.values_list("request_id", flat=True)) == sorted(
        row["request_id"] for row in rows
    )
    minutes = MessageRollup.objects.filter(bucket_seconds=60)
    assert sum(minutes.values_list("messages", flat=True)) == 70


@pytest.mark.django_db(transaction=True)
def test_the_recorder_paces_only_while_it_keeps_up_and_nobody_waits(proxy_settings):
    proxy_settings.RECORDER_BATCH_SIZE = 4
    proxy_settings.RECORDER_PACE = True
    recorder = Recorder()
    try:
        assert recorder._paced([1, 2, 3])
        assert not recorder._paced([1, 2, 3, 4])  # a full batch: a backlog, full speed
        recorder.hurry.set()  # a flush or shutdown waits for the queue
        assert not recorder._paced([1])
        recorder.hurry.clear()
        recorder.executor.shutdown()
        proxy_settings.RECORDER_PACE = False  # the default
        recorder = Recorder()
        assert not recorder._paced([1])
    finally:
        recorder.executor.shutdown()


def test_messages_recorded_through_a_paced_writer_are_all_stored(
    start_proxy, proxy_settings, rests, wait_until, monkeypatch
):
    proxy_settings.RECORDER_PACE = True
    batches = []
    write = Recorder._write

    def noting(self, batch, paced=False):
        batches.append(paced)
        return write(self, batch, paced)

    monkeypatch.setattr(Recorder, "_write", noting)
    server = start_proxy()
    with httpx.Client(timeout=30) as client:
        for number in range(12):
            body = {"model": "llama3.2", "prompt": f"Hi {number}", "stream": number % 2 == 0}
            assert client.post(f"{server.url}/api/generate", json=body).status_code == 200

    wait_until(lambda: Message.objects.count() == 12)  # no flush: the writer's own pace
    assert True in batches
    assert rests
    prompts = set(Message.objects.values_list("prompt", flat=True))
    assert prompts == {f"Hi {number}" for number in range(12)}
