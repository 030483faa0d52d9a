"""Retention: pruning old messages into archives, and restoring archives.

Archives are gzip JSON lines, one file per UTC day, `messages-YYYY-MM-DD.jsonl.gz`, one
message per line with every column but the database id. Each write appends a complete gzip
member after fsync-ing it, and gzip readers read concatenated members as one stream: a second
prune of the same day appends to the file, and a prune that stops half way leaves whole members.

Pruning goes by whole UTC days (a rollup row covers a minute, an hour or a day): rollups are
kept, so the dashboards still show the pruned period, and a later `rebuild_rollups` never meets
a day of which some messages are gone. Each batch is one short transaction: read the oldest
rows by primary key, append them to their days' archives, delete exactly those ids. The writer
keeps inserting meanwhile (on SQLite it waits for at most one batch).

Archives hold prompts: files are created 0600, only inside the archive directory, never through
a symbolic link (O_NOFOLLOW) and only as regular files.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import stat
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from django.db import transaction
from django.db.models import Count
from django.db.models.functions import TruncDate

from . import conversations, privacy, rollups
from .models import Message

# Every column a message is restored from; the id is the database's own.
FIELDS = tuple(field.attname for field in Message._meta.concrete_fields if field.attname != "id")
REQUIRED = ("request_id", "timestamp", "endpoint", "status", "latency_seconds")
# The largest batch: its ids go into one IN (...) list.
MAX_BATCH = 10_000


class ArchiveError(Exception):
    pass


def archive_name(day: date) -> str:
    return f"messages-{day:%Y-%m-%d}.jsonl.gz"


def start_of_day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def cutoff_for(days: int, now: datetime) -> datetime:
    """The start of the oldest UTC day kept when keeping `days` days."""
    return start_of_day(now - timedelta(days=days))


# --- Archive files ---------------------------------------------------------------------------


def archive_directory(path: str | Path) -> Path:
    """The archive directory, created 0700 if missing; refused unless it is a directory."""
    directory = Path(path).expanduser()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = directory.resolve(strict=True)
    if not directory.is_dir():
        raise ArchiveError(f"{directory} is not a directory")
    return directory


def check_target(directory: Path, day: date) -> Path:
    """The archive file of `day`, refused when writing it would land outside `directory`."""
    path = directory / archive_name(day)
    if path.is_symlink():
        raise ArchiveError(f"{path} is a symbolic link; refusing to write through it")
    if path.resolve().parent != directory:
        raise ArchiveError(f"{path} resolves outside {directory}; refusing to write it")
    if path.exists() and not path.is_file():
        raise ArchiveError(f"{path} is not a regular file; refusing to write it")
    return path


def append(directory: Path, day: date, rows: list[dict]) -> Path:
    """Append `rows` to `day`'s archive as one gzip member, on disk before this returns."""
    path = check_target(directory, day)
    data = gzip.compress(
        "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows).encode(),
        compresslevel=6,
    )
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as error:
        if error.errno == errno.ELOOP:  # a link put there since the check
            raise ArchiveError(f"{path} is a symbolic link; refusing to write through it") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ArchiveError(f"{path} is not a regular file; refusing to write it")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def to_json(row: dict) -> dict:
    previous = row.get("previous_request_id")
    return {
        **row,
        "request_id": str(row["request_id"]),
        "previous_request_id": None if previous is None else str(previous),
        "timestamp": row["timestamp"].astimezone(UTC).isoformat(),
    }


def from_json(data) -> dict:
    """Message fields from one archived line; ValueError when it is not one. Columns this
    version does not have are left out; missing optional ones take their defaults."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [name for name in REQUIRED if data.get(name) is None]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    row = {name: data[name] for name in FIELDS if name in data}
    row["request_id"] = uuid.UUID(str(row["request_id"]))
    timestamp = datetime.fromisoformat(str(row["timestamp"]))
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    row["timestamp"] = timestamp
    return row


def read(path: Path) -> Iterator[tuple[int, dict | None, str]]:
    """(line number, fields or None, why not) for each line of an archive."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, from_json(json.loads(line)), ""
            except (ValueError, TypeError) as error:
                yield number, None, str(error)


# --- Pruning ---------------------------------------------------------------------------------


def days_before(cutoff: datetime) -> dict[date, int]:
    """How many messages each UTC day before `cutoff` holds."""
    counted = (
        Message.objects.filter(timestamp__lt=cutoff)
        .annotate(day=TruncDate("timestamp", tzinfo=UTC))
        .values("day")
        .annotate(messages=Count("id"))
        .order_by("day")
    )
    return {row["day"]: row["messages"] for row in counted}


def prune(
    cutoff: datetime,
    directory: Path | None,
    batch_size: int,
    on_batch: Callable[[Counter], None] | None = None,
) -> Counter:
    """Delete the messages before `cutoff`, archiving each batch first; messages per day."""
    deleted: Counter = Counter()
    after = 0
    while True:
        with transaction.atomic():
            rows = list(
                Message.objects.filter(timestamp__lt=cutoff, id__gt=after)
                .order_by("id")
                .values("id", *FIELDS)[:batch_size]
            )
            if not rows:
                break
            ids = [row.pop("id") for row in rows]
            by_day: dict[date, list[dict]] = defaultdict(list)
            for row in rows:
                by_day[row["timestamp"].astimezone(UTC).date()].append(row)
            if directory is not None:
                for day, day_rows in by_day.items():
                    append(directory, day, [to_json(row) for row in day_rows])
            # Later turns kept store their history whole, as it can no longer be referenced.
            conversations.keep_history([row["request_id"] for row in rows], cutoff)
            # Exactly the ids read, not a range: under READ COMMITTED a range could take in a
            # row committed since the read, which no archive holds.
            Message.objects.filter(id__in=ids).delete()
        after = ids[-1]
        batch = Counter({day: len(day_rows) for day, day_rows in by_day.items()})
        deleted.update(batch)
        if on_batch is not None:
            on_batch(batch)
    return deleted


# --- Restoring -------------------------------------------------------------------------------


def restore(rows: Iterable[dict]) -> list[dict]:
    """Insert the messages of `rows` not already in the database (request_id is unique),
    masked with today's rules, in one transaction. Returns the rows inserted."""
    unique = {row["request_id"]: row for row in rows}
    masker = privacy.current()
    with transaction.atomic():
        present = set(
            Message.objects.filter(request_id__in=list(unique)).values_list("request_id", flat=True)
        )
        new = [row for request_id, row in unique.items() if request_id not in present]
        for row in new:
            for name, value in row.items():
                row[name] = privacy.storable(value)
            privacy.mask_row(row, masker)
        Message.objects.bulk_create([Message(**row) for row in new], ignore_conflicts=True)
    return new


def rebuild_days(days: Iterable[date]) -> int:
    """Recompute the rollups of these whole UTC days from their messages."""
    done = 0
    for day in sorted(set(days)):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        done += sum(1 for _ in rollups.rebuild(start, start + timedelta(days=1, microseconds=-1)))
    return done
