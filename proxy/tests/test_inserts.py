"""The writer's own insert statements (proxy.inserts): messages stored exactly as the ORM stores
them, conflicts skipped on replay, found by search, and rollups that agree with a rebuild."""

import importlib
import io
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection, migrations, transaction

from proxy import inserts, rollups
from proxy.models import Message, MessageRollup, SeriesRollup, UserRollup, UserTotalRollup

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 3, 2, 12, 0, 0, 250_000, tzinfo=UTC)


def full_row(number: int = 0, **overrides) -> dict:
    """A message with every field of the recorder's rows set, none at its default."""
    row = {
        "request_id": uuid.uuid4(),
        "timestamp": T0 + timedelta(seconds=number, microseconds=number),
        "endpoint": "/v1/chat/completions",
        "method": "PUT",
        "model": "qwen3:8b-ünïcode",
        "stream": True,
        "status": "cancelled",
        "http_status": 499,
        "user": "alice@example.com",
        "client_ip": "2001:db8::1",
        "user_agent": "openai-python/1.0",
        "prompt": "Why is the sky blue? 100%s sure, 'quoted' 空はなぜ青い",
        "messages": [{"role": "user", "content": "Why?", "images": None}, {"n": 1.5}],
        "options": {"temperature": 0.2, "stop": ["\n"], "seed": 7, "nested": {"a": [True]}},
        "response": 'Rayleigh "scattering" \\ of sunlight',
        "thinking": "Light scatters.",
        "tool_calls": [{"function": {"name": "lookup", "arguments": {"q": "sky"}}}],
        "truncated": True,
        "done_reason": "length",
        "error": "client went away",
        "input_tokens": 17 + number,
        "output_tokens": 2**31 - 1,
        "latency_seconds": 1.2345678901234567,
        "ttft_seconds": 0.000123,
        "tokens_per_second": 41.5,
        "total_duration_seconds": 1.2,
        "load_duration_seconds": 0.0,
        "prompt_eval_duration_seconds": 0.01,
        "eval_duration_seconds": 1.1,
        "cost_usd": 0.00042,
        "category": "chat",
    }
    row.update(overrides)
    return row


def write(rows: list[dict], *, replay: bool = False) -> list[dict]:
    """As the recorder's writer does: the messages and their rollups in one transaction."""
    with transaction.atomic():
        new = inserts.insert_messages(rows, ignore_conflicts=replay)
        rollups.add(new)
    return new


def stored(request_id) -> dict:
    values = Message.objects.filter(request_id=request_id).values().get()
    del values["id"], values["request_id"]
    return values


def test_every_column_is_stored_as_the_orm_stores_it():
    row = full_row()
    write([row])
    through_orm = {**row, "request_id": uuid.uuid4()}
    Message.objects.bulk_create([Message(**through_orm)])

    ours = stored(row["request_id"])
    assert ours == stored(through_orm["request_id"])
    assert {name: ours[name] for name in row if name != "request_id"} == {
        name: value for name, value in row.items() if name != "request_id"
    }


def test_a_field_left_out_takes_its_default_and_nulls_stay_null():
    row = full_row(client_ip="", messages=None, options=None, input_tokens=None)
    for name in ("method", "stream", "thinking", "tool_calls", "truncated", "category"):
        del row[name]
    write([row])

    message = Message.objects.get(request_id=row["request_id"])
    assert (message.method, message.stream, message.thinking) == ("POST", False, "")
    assert (message.tool_calls, message.truncated, message.category) == (None, False, "")
    assert (message.client_ip, message.messages, message.options) == (None, None, None)
    assert message.input_tokens is None
    for field in Message._meta.concrete_fields:
        if field.attname not in full_row() and not field.primary_key:
            assert getattr(message, field.attname) == field.get_default(), field.name


def test_a_row_with_a_field_message_does_not_have_is_refused():
    with pytest.raises(TypeError, match="not fields of Message: colour"):
        write([full_row(colour="blue")])
    assert not Message.objects.exists()


def test_a_replay_skips_the_rows_already_there_and_returns_the_others():
    first = [full_row(number) for number in range(3)]
    write(first)
    again = [*first[1:], full_row(3), full_row(4)]

    new = write(again, replay=True)

    assert [row["request_id"] for row in new] == [row["request_id"] for row in again[2:]]
    assert Message.objects.count() == 5
    assert MessageRollup.objects.filter(bucket_seconds=86400).get().messages == 5


def test_a_replay_of_rows_read_back_from_the_spool_matches_their_ids():
    row = full_row()
    write([row])
    spooled = {**row, "request_id": str(row["request_id"])}  # as JSON gives it back
    other = full_row(1)

    assert write([spooled, other], replay=True) == [other]
    assert Message.objects.count() == 2


def test_inserted_messages_are_found_by_search():
    write(
        [
            full_row(0, prompt="Tell me about zanzibar", response="An island."),
            full_row(1, prompt="Nothing here", response="Zanzibar spice"),
            full_row(2, prompt="Other", response="words"),
        ]
    )

    found = Message.objects.search("zanzibar", whole=True).values_list("prompt", flat=True)
    assert sorted(found) == ["Nothing here", "Tell me about zanzibar"]


def test_a_batch_too_large_for_one_statement_is_split():
    # 36 MB of JSON on PostgreSQL (one statement takes 32 MB); on SQLite, 30 rows of ~40
    # parameters against the limit SQLite had before 3.32 (999 parameters).
    tail = "x" * 600_000
    rows = [
        full_row(number, user=f"u{number % 7}", prompt=f"{tail} last{number}", response=tail)
        for number in range(30)
    ]
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        previous = connection.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    try:
        write(rows)
    finally:
        if connection.vendor == "sqlite":
            connection.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, previous)

    assert Message.objects.count() == 30
    assert Message.objects.search("last29").get().request_id == rows[-1]["request_id"]
    minutes = MessageRollup.objects.filter(bucket_seconds=60)
    assert sum(minutes.values_list("messages", flat=True)) == 30
    assert UserRollup.objects.filter(bucket_seconds=3600).count() == 7


def test_batches_of_any_size_use_a_few_statement_texts():
    """sqlite3 keeps each statement text it prepared (128 per connection); with one text per
    batch size the writer's memory grew by ~100 MB under load. Any size of batch is written
    with statements of a few sizes, every row once, in order."""
    texts = set()
    for size in range(1, 400):
        values = [[number, number] for number in range(size)]
        written = []
        for chunk, (sql, params) in inserts.statements("t", ("a", "b"), values, values):
            texts.add(sql)
            if connection.vendor == "sqlite":  # PostgreSQL's is one JSON parameter
                assert params == [value for row in chunk for value in row]
            written += chunk
        assert written == values
    assert len(texts) <= 8 if connection.vendor == "sqlite" else len(texts) == 1
    assert list(inserts.row_counts(83, 1000)) == [64, 16, 2, 1]
    assert list(inserts.row_counts(7, 5)) == [4, 2, 1]


def rollup_tables() -> dict:
    """Each rollup table as sorted (key, sums) pairs."""
    return {
        model.__name__: sorted(
            (row[: len(keys)], row[len(keys) :])
            for row in model.objects.values_list(*keys, *counters).order_by()
        )
        for model, keys, counters in (
            (MessageRollup, rollups.MESSAGE_KEYS, rollups.ROLLUP_SUMS),
            (UserRollup, rollups.USER_KEYS, rollups.USER_ROLLUP_SUMS),
            (SeriesRollup, rollups.SERIES_KEYS, rollups.USER_ROLLUP_SUMS),
            (UserTotalRollup, rollups.USER_TOTAL_KEYS, rollups.USER_ROLLUP_SUMS),
        )
    }


def varied_rows() -> list[dict]:
    """300 messages across minutes and hours, with every kind of missing value."""
    return [
        full_row(
            number * 17,  # across minutes and hours
            model=("llama3.2", "qwen3", "")[number % 3],
            status=("success", "error", "cancelled")[number % 3],
            user=f"u{number % 4}",
            category=("chat", "code")[number % 2],
            input_tokens=None if number % 5 == 0 else number,
            ttft_seconds=None if number % 6 == 0 else number / 100,
            tokens_per_second=None if number % 4 == 0 else 20.0 + number,
            cost_usd=None if number % 7 == 0 else number / 1000,
            output_tokens=number * 3,
            latency_seconds=number / 10,
        )
        for number in range(300)
    ]


def write_in_batches(rows: list[dict]) -> None:
    for start in range(0, len(rows), 64):
        write(rows[start : start + 64])


def test_rollups_added_batch_by_batch_equal_a_rebuild_from_the_messages():
    write_in_batches(varied_rows())
    added = rollup_tables()

    call_command("rebuild_rollups", stdout=io.StringIO())

    rebuilt = rollup_tables()
    for name, rows in added.items():  # sums of floats in another order: to the last digits
        assert [(key, pytest.approx(sums, rel=1e-12)) for key, sums in rows] == rebuilt[name]
    assert sum(sums[0] for key, sums in added["MessageRollup"] if key[0] == 86400) == 300
    assert sum(sums[0] for key, sums in added["UserTotalRollup"] if key[0] == 3600) == 300


def test_the_migration_fills_the_narrow_rollups_from_the_wide_ones():
    write_in_batches(varied_rows())
    added = rollup_tables()
    SeriesRollup.objects.all().delete()
    UserTotalRollup.objects.all().delete()
    migration = importlib.import_module("proxy.migrations.0011_series_rollups").Migration

    with connection.cursor() as cursor:
        for operation in migration.operations:
            if isinstance(operation, migrations.RunSQL):
                cursor.execute(operation.sql)

    filled = rollup_tables()
    for name in ("SeriesRollup", "UserTotalRollup"):
        assert [(key, pytest.approx(sums, rel=1e-12)) for key, sums in added[name]] == filled[name]
