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
stream. A mirror that cannot be written is logged and never costs a message.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """The clock that picks the day's file (tests set it)."""
    return datetime.now(UTC)


def path_for(directory: Path, day: datetime) -> Path:
    return directory / f"messages-{day:%Y-%m-%d}.jsonl.gz"


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
    # default=str: a column without a JSON type of its own (a UUID) becomes its text.
    lines = "".join(
        json.dumps(_jsonable(row), separators=(",", ":"), default=str) + "\n" for row in rows
    )
    # mtime=0: the member's bytes depend on the rows only.
    member = gzip.compress(lines.encode("utf-8"), compresslevel=6, mtime=0)
    descriptor = os.open(
        path_for(directory, utc_now()), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640
    )
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
