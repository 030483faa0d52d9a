"""prune_messages and import_messages: old messages go to daily gzip JSON-lines archives in
short batches while traffic flows, rollups stay, archives come back exactly once."""

import gzip
import io
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from proxy import rollups
from proxy.models import Message, MessageRollup, UserRollup

pytestmark = pytest.mark.django_db(transaction=True)

NOW = timezone.now()
TODAY = NOW.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def write(*timestamps: datetime, **fields) -> list[Message]:
    """Messages at these times, written as the recorder writes them (rows and rollups), in
    the order given."""
    rows = [
        {
            "request_id": uuid.uuid4(),
            "timestamp": timestamp,
            "endpoint": "/api/chat",
            "model": "llama3.2",
            "status": "success",
            "http_status": 200,
            "user": "alice",
            "client_ip": "127.0.0.1",
            "prompt": f"Why is the sky blue? ({number})",
            "messages": [{"role": "user", "content": "Why is the sky blue?"}],
            "options": {"temperature": 0.2},
            "response": "Rayleigh scattering.",
            "input_tokens": 10,
            "output_tokens": 20,
            "latency_seconds": 1.5,
            "ttft_seconds": 0.25,
            "tokens_per_second": 40.0,
            "cost_usd": 0.001,
            "category": "chat",
            **fields,
        }
        for number, timestamp in enumerate(timestamps)
    ]
    with transaction.atomic():
        Message.objects.bulk_create([Message(**row) for row in rows])
        rollups.add(rows)
    written = Message.objects.in_bulk([row["request_id"] for row in rows], field_name="request_id")
    return [written[row["request_id"]] for row in rows]


def days_ago(days: int, hours: int = 12) -> datetime:
    return TODAY - timedelta(days=days) + timedelta(hours=hours)


def rollup_totals() -> dict:
    return {
        "messages": MessageRollup.objects.aggregate(n=Sum("messages"))["n"],
        "tokens": MessageRollup.objects.aggregate(n=Sum("output_tokens"))["n"],
        "users": UserRollup.objects.aggregate(n=Sum("messages"))["n"],
    }


def prune(*args: str) -> str:
    out = io.StringIO()
    call_command("prune_messages", *args, stdout=out)
    return out.getvalue()


def archived(path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def comparable(message: Message) -> dict:
    fields = {
        field.attname: getattr(message, field.attname)
        for field in Message._meta.concrete_fields
        if field.attname != "id"
    }
    return {**fields, "request_id": str(fields["request_id"])}


def by_request(fields: dict) -> str:
    return fields["request_id"]


def test_it_archives_and_deletes_whole_days_past_the_retention_and_keeps_the_rest(tmp_path):
    old = write(days_ago(100), days_ago(100, hours=20), days_ago(95))
    kept = write(days_ago(89), days_ago(2), NOW)
    totals = rollup_totals()

    output = prune("--older-than", "90d", "--archive", str(tmp_path))

    assert set(Message.objects.values_list("id", flat=True)) == {m.id for m in kept}
    first_day = (TODAY - timedelta(days=100)).date()
    second_day = (TODAY - timedelta(days=95)).date()
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        f"messages-{first_day}.jsonl.gz",
        f"messages-{second_day}.jsonl.gz",
    ]
    first = archived(tmp_path / f"messages-{first_day}.jsonl.gz")
    assert [row["request_id"] for row in first] == [str(m.request_id) for m in old[:2]]
    assert first[0]["messages"] == [{"role": "user", "content": "Why is the sky blue?"}]
    assert first[0]["prompt"] == old[0].prompt and first[0]["cost_usd"] == 0.001
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600  # archives hold prompts
    assert rollup_totals() == totals  # the dashboards still count the pruned days
    assert f"{first_day}: deleted 2 message(s) archived to {tmp_path}" in output
    assert "Deleted 3 message(s)" in output


def test_a_dry_run_says_what_would_go_and_touches_nothing(tmp_path):
    write(days_ago(100), days_ago(100), days_ago(95))

    output = prune("--older-than", "90", "--archive", str(tmp_path / "archive"), "--dry-run")

    assert Message.objects.count() == 3
    assert not (tmp_path / "archive").exists()
    assert "Would prune 3 message(s)" in output
    assert f"{(TODAY - timedelta(days=100)).date()}: 2 message(s)" in output


def test_without_a_retention_nothing_is_pruned(settings, tmp_path):
    settings.RETENTION_DAYS = 0
    write(days_ago(1000))

    output = prune("--archive", str(tmp_path))

    assert Message.objects.count() == 1
    assert "Retention is off" in output


def test_the_retention_and_archive_settings_are_the_defaults(settings, tmp_path):
    settings.RETENTION_DAYS = 30
    settings.RETENTION_ARCHIVE_DIR = str(tmp_path)
    write(days_ago(31), days_ago(29))

    prune()

    assert Message.objects.count() == 1
    assert (tmp_path / f"messages-{(TODAY - timedelta(days=31)).date()}.jsonl.gz").exists()


def test_small_batches_archive_every_message_once(tmp_path):
    old = write(*[days_ago(100, hours=hour) for hour in range(7)])

    prune("--older-than", "90d", "--archive", str(tmp_path), "--batch-size", "2")

    (path,) = tmp_path.iterdir()
    assert [row["request_id"] for row in archived(path)] == [str(m.request_id) for m in old]
    assert Message.objects.count() == 0


def test_a_second_run_on_the_same_day_appends_to_its_archive(tmp_path):
    first = write(days_ago(100))
    prune("--older-than", "90d", "--archive", str(tmp_path))
    # e.g. a spool replayed late, with a message of that old day
    second = write(days_ago(100, hours=3))

    prune("--older-than", "90d", "--archive", str(tmp_path))

    (path,) = tmp_path.iterdir()
    assert [row["request_id"] for row in archived(path)] == [
        str(first[0].request_id),
        str(second[0].request_id),
    ]


def test_pruning_while_the_proxy_records_loses_nothing_new(proxy, tmp_path):
    archive = tmp_path / "archive"  # tmp_path also holds the proxy's spool
    old = write(*[days_ago(100, hours=hour % 24) for hour in range(60)])

    def traffic(_):
        body = {"model": "llama3.2", "prompt": "Hi", "stream": False}
        return httpx.post(f"{proxy.url}/api/generate", json=body, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = pool.map(traffic, range(40))
        prune("--older-than", "90d", "--archive", str(archive), "--batch-size", "5")
        assert set(statuses) == {200}
    proxy.flush()

    assert Message.objects.count() == 40
    assert not Message.objects.filter(timestamp__lt=TODAY - timedelta(days=90)).exists()
    archived_ids = {row["request_id"] for path in archive.iterdir() for row in archived(path)}
    assert archived_ids == {str(m.request_id) for m in old}


def test_import_restores_pruned_messages_exactly_and_only_once(tmp_path):
    old = write(days_ago(100), days_ago(100, hours=1), days_ago(95))
    before = [comparable(m) for m in old]
    totals = rollup_totals()
    prune("--older-than", "90d", "--archive", str(tmp_path))
    files = sorted(str(path) for path in tmp_path.iterdir())

    first = io.StringIO()
    call_command("import_messages", *files, stdout=first)
    second = io.StringIO()
    call_command("import_messages", *files, stdout=second)

    restored = [comparable(m) for m in Message.objects.all()]
    assert sorted(restored, key=by_request) == sorted(before, key=by_request)
    assert "Imported 3 of 3 message(s) read" in first.getvalue()
    assert "Imported 0 of 3 message(s) read (3 already present)" in second.getvalue()
    assert rollup_totals() == totals  # rebuilt for the restored days: not counted twice
    assert Message.objects.search("sky blue").count() == 3  # the search index follows


def test_import_into_a_database_that_never_had_them_builds_their_rollups(tmp_path):
    write(days_ago(100), days_ago(95))
    totals = rollup_totals()
    prune("--older-than", "90d", "--archive", str(tmp_path))
    MessageRollup.objects.all().delete()
    UserRollup.objects.all().delete()

    call_command("import_messages", *tmp_path.iterdir(), stdout=io.StringIO())

    assert rollup_totals() == totals


def test_import_skips_bad_lines_and_keeps_what_a_damaged_file_held(tmp_path):
    good = {
        "request_id": str(uuid.uuid4()),
        "timestamp": days_ago(100).isoformat(),
        "endpoint": "/api/chat",
        "status": "success",
        "latency_seconds": 1.0,
        "a_column_from_the_future": 1,
    }
    lines = [json.dumps(good), "not json", json.dumps({"request_id": "x"}), "[1, 2]"]
    path = tmp_path / "mixed.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    damaged = tmp_path / "damaged.jsonl.gz"
    damaged.write_bytes(gzip.compress(b"\n".join([json.dumps(good).encode()] * 3))[:-12])
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match=r"damaged\.jsonl\.gz"):
        call_command("import_messages", str(path), str(damaged), stdout=out, stderr=err)

    assert Message.objects.get().request_id == uuid.UUID(good["request_id"])
    assert err.getvalue().count("skipped") == 3


def test_import_refuses_what_is_not_a_file(tmp_path):
    with pytest.raises(CommandError, match="Not a file"):
        call_command("import_messages", str(tmp_path / "missing.jsonl.gz"))


@pytest.mark.parametrize("value", ["90x", "-3", "0", "ninety"])
def test_older_than_must_be_a_number_of_days(value):
    with pytest.raises(CommandError):
        call_command("prune_messages", "--older-than", value)


# --- The archive directory -----------------------------------------------------------------


def test_a_symbolic_link_in_the_archive_directory_is_refused_and_nothing_deleted(tmp_path):
    write(days_ago(100))
    archive = tmp_path / "archive"
    archive.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    link = archive / f"messages-{(TODAY - timedelta(days=100)).date()}.jsonl.gz"
    link.symlink_to(os.path.relpath(outside, archive))

    with pytest.raises(CommandError, match="symbolic link"):
        prune("--older-than", "90d", "--archive", str(archive))

    assert outside.read_text() == "precious"
    assert Message.objects.count() == 1


def test_a_directory_in_place_of_an_archive_file_is_refused(tmp_path):
    write(days_ago(100))
    (tmp_path / f"messages-{(TODAY - timedelta(days=100)).date()}.jsonl.gz").mkdir()

    with pytest.raises(CommandError, match="not a regular file"):
        prune("--older-than", "90d", "--archive", str(tmp_path))

    assert Message.objects.count() == 1


def test_an_archive_path_that_is_a_file_is_refused(tmp_path):
    write(days_ago(100))
    (tmp_path / "file").write_text("")

    with pytest.raises(CommandError, match="Archive refused"):
        prune("--older-than", "90d", "--archive", str(tmp_path / "file"))

    assert Message.objects.count() == 1


def test_a_traversing_archive_path_is_resolved_before_use(tmp_path):
    write(days_ago(100))
    (tmp_path / "a").mkdir()

    prune("--older-than", "90d", "--archive", str(tmp_path / "a" / ".." / "b"))

    assert [path.name for path in (tmp_path / "b").iterdir()] == [
        f"messages-{(TODAY - timedelta(days=100)).date()}.jsonl.gz"
    ]
    assert list((tmp_path / "a").iterdir()) == []
