"""Many rows in one statement: the writer's inserts of messages and its rollup upserts.

`Message.objects.bulk_create` builds a model instance per row and compiles every value through
the ORM: with the rollups, 160-185 µs of the writer thread's CPU per message, most of it
holding the GIL that the event loop needs (bench/writer.py; 95 µs on SQLite now, 50 on
PostgreSQL). Here the columns and how each value is prepared are worked out once from
`Message`'s concrete fields, so a field added to the model is written with no change here, and
a batch goes to the database as one statement in the form each engine takes most cheaply:

- SQLite: `INSERT ... VALUES (?, ...), (?, ...)` with the values as Django's fields prepare
  them for SQLite (text, numbers and booleans as they are). The statement is written with
  sqlite3's own `?` marks: Django's cursor rewrites `%s` into `?` with a regular expression,
  ~220 µs for a batch of 64 messages, and has nothing to rewrite then.
- PostgreSQL: `INSERT ... SELECT ... FROM jsonb_populate_recordset(NULL::table, %s)`, the whole
  batch as one JSON parameter (orjson, in C) that the server types by the table's own columns.
  psycopg adapting thousands of parameters one by one costs 2 µs each in Python under Django's
  client-side binding; many one-row statements (`executemany`) ~65 µs per message.

The search index follows every insert by itself (migration 0003: a generated column on
PostgreSQL, triggers on SQLite). Statements go through Django's cursor, so a failure stays
the `DatabaseError` that the recorder spools on, and django-prometheus still counts them.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence

import orjson
from django.db import DEFAULT_DB_ALIAS, connection, connections, models

from . import pacing
from .models import Message

# Field types whose values the drivers take as they are: as text, number or boolean on both
# databases, and also as JSON on PostgreSQL for the rest of this list (a UUID or a datetime
# becomes the text PostgreSQL parses into the column's type).
_AS_IS = frozenset(
    {
        "BigIntegerField",
        "BooleanField",
        "CharField",
        "FloatField",
        "IntegerField",
        "PositiveBigIntegerField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "SmallIntegerField",
        "TextField",
    }
)
_AS_IS_IN_JSON = _AS_IS | {"DateTimeField", "ForeignKey", "JSONField", "UUIDField"}
# The most JSON one PostgreSQL statement takes: well under jsonb's limit of 256 MiB per value,
# whatever the rows (a message's texts can reach RECORDER_MAX_TEXT_CHARS each).
_POSTGRESQL_JSON_BYTES = 32 * 1024 * 1024
_MISSING = object()
# The most rows in one SQLite statement (see `row_counts`).
SQLITE_ROWS = 128


class _Column:
    """A message field: its column, default, and how a value is prepared for the database."""

    __slots__ = ("adapt", "default", "name")

    def __init__(self, field: models.Field, vendor: str):
        self.name = field.attname
        self.default = field.get_default
        kind = field.get_internal_type()
        self.adapt: Callable | None = None
        if vendor == "postgresql":
            if kind == "GenericIPAddressField":
                self.adapt = _ip_address  # an empty address is no address, as Django stores it
            elif kind not in _AS_IS_IN_JSON:
                self.adapt = _prepared(field)  # in the JSON as orjson or str() writes it
        elif kind not in _AS_IS:
            self.adapt = field.get_db_prep_save


def _ip_address(value, _connection):
    return value or None


def _prepared(field: models.Field) -> Callable:
    return lambda value, _connection: field.get_prep_value(value)


_fields: list[models.Field] | None = None
_columns: dict[str, list[_Column]] = {}
_names: frozenset[str] = frozenset()
_relations: dict[str, models.Field] = {}


def _message_columns() -> list[_Column]:
    """Every column a message is inserted with: all concrete fields but the database id."""
    global _fields, _names, _relations
    if _fields is None:
        _fields = [
            field
            for field in Message._meta.concrete_fields
            if not field.primary_key and not getattr(field, "generated", False)
        ]
        _relations = {field.name: field for field in _fields if field.is_relation}
        _names = frozenset(name for field in _fields for name in {field.name, field.attname})
    vendor = connection.vendor
    if vendor not in _columns:
        _columns[vendor] = [_Column(field, vendor) for field in _fields]
    return _columns[vendor]


def insert_messages(rows: Sequence[dict], *, ignore_conflicts: bool = False) -> list[dict]:
    """Insert messages given as dicts of their fields (by name, or a relation's attname); a
    field a row leaves out takes its default. Returns the rows inserted: all of them, or with
    `ignore_conflicts` those whose request_id was not there yet (a replay repeating rows an
    interrupted replay already wrote). Call inside the transaction that also adds the rollups.
    """
    if not rows:
        return []
    columns = _message_columns()
    names = [column.name for column in columns]
    tail = f" ON CONFLICT DO NOTHING RETURNING {connection.ops.quote_name('request_id')}"
    database = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a lookup
    inserted = []
    values = []
    for row in rows:
        pacing.breathe()
        values.append(_message_values(row, columns, database))
    with connection.cursor() as cursor:
        for chunk, (sql, params) in statements(
            Message._meta.db_table,
            names,
            values,
            rows,
            tail=tail if ignore_conflicts else "",
        ):
            cursor.execute(sql, params)
            if ignore_conflicts:
                written = {_uuid(request_id) for (request_id,) in cursor.fetchall()}
                inserted += [row for row in chunk if _uuid(row["request_id"]) in written]
    return inserted if ignore_conflicts else list(rows)


def _message_values(row: dict, columns: list[_Column], database) -> list:
    unknown = row.keys() - _names
    if unknown:
        raise TypeError(f"not fields of Message: {', '.join(sorted(unknown))}")
    if _relations:
        row = _by_attname(row)
    values = []
    append = values.append
    for column in columns:
        value = row.get(column.name, _MISSING)
        if value is _MISSING:
            value = column.default()
        if column.adapt is not None:
            value = column.adapt(value, database)
        append(value)
    return values


def _by_attname(row: dict) -> dict:
    """A row whose relations are given by name (a model instance or its key) keyed by attname,
    as `Message(**row)` would take them."""
    if not any(name in row for name in _relations):
        return row
    row = dict(row)
    for name, field in _relations.items():
        if name in row:
            value = row.pop(name)
            if isinstance(value, models.Model):
                value = getattr(value, field.target_field.attname)
            row[field.attname] = value
    return row


def _uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def statements(
    table: str, columns: Sequence[str], values: Sequence[Sequence], items: Sequence, tail: str = ""
) -> Iterator[tuple[Sequence, tuple[str, list]]]:
    """`INSERT INTO table (columns) <rows> tail` for rows of `values` (prepared for the
    database), as few statements as the database takes (a paced writer: statements of a few
    rows, with rests between them). Yields each statement with the slice of `items` (what the
    caller knows the rows as) that it inserts."""
    quote = connection.ops.quote_name
    names = ", ".join(quote(column) for column in columns)
    head = f"INSERT INTO {quote(table)} ({names}) "
    if connection.vendor == "postgresql":
        sql = f"{head}SELECT {names} FROM jsonb_populate_recordset(NULL::{quote(table)}, %s::jsonb)"
        most = pacing.rows_per_statement(len(values))
        start, parts, size = 0, [], 0
        for index, row in enumerate(values):
            part = orjson.dumps(
                dict(zip(columns, row, strict=True)),
                default=str,
                option=orjson.OPT_NON_STR_KEYS,
            )
            if parts and (size + len(part) > _POSTGRESQL_JSON_BYTES or len(parts) == most):
                yield items[start:index], (sql + tail, [_json_array(parts)])
                pacing.breathe()
                start, parts, size = index, [], 0
            parts.append(part)
            size += len(part) + 1
        if parts:
            yield items[start:], (sql + tail, [_json_array(parts)])
        return
    width = len(columns)
    one = f"({', '.join(['?'] * width)})"
    start = 0
    most = pacing.rows_per_statement(_sqlite_max_params() // width)
    for count in row_counts(len(values), most):
        rows = values[start : start + count]
        params = [value for row in rows for value in row]
        sql = head + "VALUES " + ", ".join([one] * count) + tail
        yield items[start : start + count], (sql, params)
        pacing.breathe()
        start += count


def row_counts(total: int, most: int) -> Iterator[int]:
    """How many rows each SQLite statement of a batch takes: powers of two, largest first (83
    rows: 64, 16, 2, 1), at most `most` and `SQLITE_ROWS`. sqlite3 keeps every statement it
    prepared (128 per connection), and a batch's statement for a new number of rows is a new
    one: with any count a writer held ~100 MB of prepared statements after a few thousand
    batches (bench: RSS +3.5 KB a request, flat after this); with these at most eight texts
    per table."""
    size = 1
    while size * 2 <= min(most, SQLITE_ROWS):
        size *= 2
    while total:
        while size > total:
            size //= 2
        yield size
        total -= size


def _sqlite_max_params() -> int:
    connection.ensure_connection()
    # SQLITE_MAX_VARIABLE_NUMBER is a build option: 999 before SQLite 3.32, 32,766 since.
    return connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


def _json_array(parts: list[bytes]) -> str:
    return (b"[" + b",".join(parts) + b"]").decode()
