"""The JSONL mirror: every stored message, as stored, in one gzip file per UTC day, including
the messages replayed from the spool, and safe for several worker processes at once."""

import gzip
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import ollama
import pytest

from proxy import mirror
from proxy.models import Message, ModelPrice
from proxy.tests.test_recorder import database_locked, stream_all

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [{"role": "user", "content": "Mail the answer to jane.doe@example.com"}]
NOV_26 = datetime(2026, 11, 26, 23, 59, 59, tzinfo=UTC)
NOV_27 = datetime(2026, 11, 27, 0, 0, 1, tzinfo=UTC)


@pytest.fixture
def mirrored(proxy_settings, tmp_path, monkeypatch):
    """Mirroring into a folder of the test's own, on a clock the test moves."""
    proxy_settings.MIRROR_DIR = str(tmp_path / "mirror")
    clock = [NOV_26]
    monkeypatch.setattr(mirror, "utc_now", lambda: clock[0])
    return Path(proxy_settings.MIRROR_DIR), clock


def read(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def assert_as_stored(row: dict) -> None:
    """A mirrored row holds exactly what the database holds for its message."""
    message = Message.objects.get(request_id=row["request_id"])
    assert datetime.fromisoformat(row["timestamp"]) == message.timestamp
    for name, value in row.items():
        if name not in {"request_id", "timestamp"}:
            assert value == getattr(message, name), name


def test_stored_messages_are_mirrored_as_stored_in_one_file_per_utc_day(
    mirrored, proxy, transactional_db
):
    directory, clock = mirrored
    ModelPrice.objects.create(
        model_pattern="*", input_usd_per_million=1000, output_usd_per_million=2000
    )
    client = ollama.Client(host=proxy.url)
    client.chat(model="llama3.2", messages=QUESTION, stream=False)
    client.generate(model="qwen3", prompt="Hi")
    client.list()  # not a message: not mirrored
    proxy.flush()
    clock[0] = NOV_27
    client.embed(model="all-minilm", input="Hi")
    proxy.flush()

    files = sorted(path.name for path in directory.iterdir())
    assert files == ["messages-2026-11-26.jsonl.gz", "messages-2026-11-27.jsonl.gz"]
    first_day = read(directory / files[0])
    second_day = read(directory / files[1])
    assert [row["endpoint"] for row in first_day] == ["/api/chat", "/api/generate"]
    assert [row["endpoint"] for row in second_day] == ["/api/embed"]
    assert Message.objects.count() == 3
    for row in first_day + second_day:
        assert_as_stored(row)
        assert row["cost_usd"] > 0
    # Masked as stored: the address never reaches the mirror.
    assert "[email]" in first_day[0]["prompt"]
    raw = gzip.decompress((directory / files[0]).read_bytes())
    assert b"jane.doe" not in raw


def test_messages_spooled_while_the_database_is_away_are_mirrored_once_replayed(
    mirrored, proxy_settings, start_proxy, wait_until
):
    directory, _ = mirrored
    proxy_settings.RECORDER_DB_TIMEOUT = 0.2
    proxy = start_proxy()
    with database_locked():
        assert stream_all(proxy.url, 5) == [200] * 5
        proxy.flush()
        assert not directory.exists()  # nothing stored yet, so nothing mirrored

    today = directory / "messages-2026-11-26.jsonl.gz"
    wait_until(lambda: today.exists() and len(read(today)) == 5)
    rows = read(today)
    assert len({row["request_id"] for row in rows}) == 5
    for row in rows:
        assert_as_stored(row)


WRITER = """
import sys, uuid
from datetime import UTC, datetime
import django
django.setup()
from proxy import mirror
worker = int(sys.argv[1])
for batch in range(40):
    mirror.write([
        {"request_id": uuid.uuid4(), "timestamp": datetime.now(UTC), "worker": worker,
         "sequence": batch * 10 + index, "response": sys.argv[2]}
        for index in range(10)
    ])
"""


def test_worker_processes_append_whole_batches_to_the_shared_daily_file(tmp_path):
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ollama_monitor.settings",
        "MIRROR_DIR": str(tmp_path),
    }
    # Incompressible text, so that each batch is one large write (far beyond PIPE_BUF).
    payload = os.urandom(4096).hex()
    workers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(worker), payload], env=environment)
        for worker in range(4)
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0] * 4

    (path,) = tmp_path.glob("messages-*.jsonl.gz")
    assert path.name == f"messages-{datetime.now(UTC):%Y-%m-%d}.jsonl.gz"
    rows = read(path)
    assert len(rows) == 4 * 400
    for worker in range(4):
        sequences = [row["sequence"] for row in rows if row["worker"] == worker]
        assert sequences == list(range(400))  # each process's batches whole and in order
    assert all(row["response"] == payload for row in rows)
    assert len({uuid.UUID(row["request_id"]) for row in rows}) == len(rows)


def test_files_older_than_the_days_kept_are_deleted_once_a_day(
    mirrored, proxy_settings, monkeypatch
):
    directory, clock = mirrored
    directory.mkdir(parents=True)
    monkeypatch.setattr(mirror, "_pruned_for", None)
    proxy_settings.MIRROR_KEEP_DAYS = 2
    names = [f"messages-2026-11-{day:02d}.jsonl.gz" for day in (1, 24, 25, 26)]
    for name in (*names, "notes.txt", "messages-latest.jsonl.gz"):
        (directory / name).write_bytes(b"")
    row = {"request_id": uuid.uuid4(), "timestamp": NOV_27, "prompt": "Hi"}

    clock[0] = NOV_27
    mirror.write([row])

    kept = sorted(path.name for path in directory.iterdir())
    assert kept == [
        "messages-2026-11-26.jsonl.gz",  # yesterday and today: two days
        "messages-2026-11-27.jsonl.gz",
        "messages-latest.jsonl.gz",  # not a day's file: left alone
        "notes.txt",
    ]
    assert read(directory / "messages-2026-11-27.jsonl.gz")[0]["prompt"] == "Hi"

    (directory / "messages-2026-11-02.jsonl.gz").write_bytes(b"")
    mirror.write([row])  # the same day: no second pass
    assert (directory / "messages-2026-11-02.jsonl.gz").exists()


def test_with_no_days_set_every_file_is_kept(mirrored, monkeypatch):
    directory, _ = mirrored
    directory.mkdir(parents=True)
    monkeypatch.setattr(mirror, "_pruned_for", None)
    (directory / "messages-2020-01-01.jsonl.gz").write_bytes(b"")

    mirror.write([{"request_id": uuid.uuid4(), "timestamp": NOV_26}])

    assert (directory / "messages-2020-01-01.jsonl.gz").exists()
