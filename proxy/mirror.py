"""A gzip JSONL copy of every stored message, one file per UTC day, for log pipelines.

Off unless MIRROR_DIR is set. The recorder's writer thread calls `write` with the rows it has
just stored in the database (those written at once and those replayed from the spool), so the
mirror holds the messages as stored: masked, priced and categorised, one JSON object per line
in the spool's format. A message is mirrored when it is stored: one replayed from the spool
lands in the file of the day of its replay (its `timestamp` says when it happened).

Files are `messages-YYYY-MM-DD.jsonl.gz` (UTC, so a day never depends on a server's zone).
Each batch is one complete gzip member appended with a single O_APPEND write, so the worker
processes of a host share one file per day without interleaving (a local filesystem; give each
host its own MIRROR_DIR on a network one). `zcat` and Python's gzip read the members as one
stream. A mirror that cannot be written is logged and never costs a message. With
MIRROR_KEEP_DAYS, each process deletes the files of older days at its first write of a day.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)

_NAME = "messages-{day:%Y-%m-%d}.jsonl.gz"
# The UTC day this process last pruned the mirror for (MIRROR_KEEP_DAYS): once a day.
_pruned_for: date | None = None


def utc_now() -> datetime:
    """The clock that picks the day's file (tests set it)."""
    return datetime.now(UTC)


def path_for(directory: Path, day: datetime) -> Path:
    return directory / _NAME.format(day=day)


def write(rows: list[dict]) -> None:
    """Append stored rows to today's file; a no-op without MIRROR_DIR.

    Never raises: the messages are in the database already, a mirror must never cost them.
    """
    if not settings.MIRROR_DIR or not rows:
        return
    try:
        _append(rows)
    except Exception:
        log.exception("mirror: could not copy %d messages to %s", len(rows), settings.MIRROR_DIR)


def _append(rows: list[dict]) -> None:
    directory = Path(settings.MIRROR_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    now = utc_now()
    _prune(directory, now.date())
    # default=str: a column without a JSON type of its own (a UUID) becomes its text.
    lines = "".join(
        json.dumps(_jsonable(row), separators=(",", ":"), default=str) + "\n" for row in rows
    )
    # mtime=0: the member's bytes depend on the rows only.
    member = gzip.compress(lines.encode("utf-8"), compresslevel=6, mtime=0)
    descriptor = os.open(path_for(directory, now), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        written = os.write(descriptor, member)
        if written != len(member):  # a full disk; the member is cut, and so is the file
            raise OSError(f"mirror: wrote {written} of {len(member)} bytes")
    finally:
        os.close(descriptor)


def _jsonable(row: dict) -> dict:
    """The spool's shape: the request id as text, the timestamp in ISO 8601."""
    return {
        **row,
        "request_id": str(row["request_id"]),
        "timestamp": row["timestamp"].isoformat(),
    }


def _prune(directory: Path, today: date) -> None:
    """Delete the day files older than MIRROR_KEEP_DAYS days (today is one of them), at this
    process's first write of each UTC day; 0 keeps every file. Days are read from the names."""
    global _pruned_for
    keep = settings.MIRROR_KEEP_DAYS
    if not keep or _pruned_for == today:
        return
    _pruned_for = today
    oldest = today - timedelta(days=keep - 1)
    for path in directory.glob("messages-*.jsonl.gz"):
        try:
            day = date.fromisoformat(path.name.removeprefix("messages-")[:10])
        except ValueError:
            continue  # not one of the mirror's files
        if day < oldest and path.name == _NAME.format(day=day):
            try:
                path.unlink()
            except FileNotFoundError:  # another worker pruned it first
                continue
            except OSError as error:  # never at the cost of today's copy
                log.warning("mirror: could not delete %s: %s", path.name, error)
                continue
            log.info("mirror: deleted %s (MIRROR_KEEP_DAYS=%d)", path.name, keep)
