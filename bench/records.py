"""The proxy benchmark's databases: a fresh one per proxy, and the count of what it recorded.

Counting reads the database directly (sqlite3, psycopg), not through Django: the benchmark
process never imports the project, so what it counts is what the proxy processes wrote.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# The server the benchmark may create and drop its own databases on.
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")

COUNT_QUERY = 'SELECT "user", status, COUNT(*) FROM proxy_message GROUP BY "user", status'


def postgres_url(database: str) -> str:
    parts = urlsplit(POSTGRES_URL)
    return urlunsplit(parts._replace(path=f"/{database}"))


def postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return True
    except Exception:
        return False


def create_postgres_database(database: str) -> str:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        admin.execute(f'CREATE DATABASE "{database}"')
    return postgres_url(database)


def drop_postgres_database(database: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def recorded(database_url: str | None, data_dir: Path) -> Counter:
    """Messages per (case, status): the database's rows plus any spooled ones."""
    counts: Counter = Counter()
    if database_url:
        import psycopg

        with psycopg.connect(database_url) as connection:
            rows = connection.execute(COUNT_QUERY).fetchall()
    else:
        with sqlite3.connect(data_dir / "db.sqlite3") as connection:
            rows = connection.execute(COUNT_QUERY).fetchall()
    for user, status, count in rows:
        counts[(user, status)] += count
    for spool in (data_dir / "spool").glob("spool-*.jsonl.gz*"):
        with gzip.open(spool, "rt", encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    counts[(row["user"], row["status"])] += 1
    return counts


def spooled(data_dir: Path) -> int:
    return sum(1 for _ in (data_dir / "spool").glob("spool-*.jsonl.gz*"))
