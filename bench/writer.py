"""What the recorder's writer costs per message, and how long it keeps the event loop waiting.

    .venv/bin/python bench/writer.py [--rows 20000] [--batch 64] [--database sqlite|postgres|both]
        [--postgres-url postgres://postgres@127.0.0.1:5432] [--switch-intervals 0.005,0.001]

In-process, no HTTP: a thread writes N messages in batches as the recorder's writer thread does
(a transaction per batch holding the messages and their rollups), once through the ORM's
`bulk_create` with one upsert statement per rollup row (the writer before bench/writer.py, the
baseline) and once through `proxy.inserts` with one upsert statement per rollup table (the
writer now), in alternating rounds on the same database. Meanwhile the main thread plays the
event loop: it sleeps 0.5 ms at a time and notes how late it wakes up. A wake-up needs the GIL,
so its lateness is the time the writer held the GIL against the loop (Python's switch interval,
5 ms by default, bounds one wait; `--switch-intervals` tries others).

Prints per path: µs per message of the whole batch (wall and the writer thread's CPU), the
parts (message insert per message, rollups and commit per batch), and the loop's lateness at
p50 / p99 / max, against the same loop with no writer running. Each database runs in a process
of its own (Django's settings are per process), in a fresh benchmark database.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE_SLEEP = 0.0005

# --- the child: one database -------------------------------------------------------------------


def child(args) -> None:
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ollama_monitor.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    rows = list(messages(args.rows))
    idle = probe_alone(2.0)
    results = {"database": connection.vendor, "idle": idle, "paths": []}
    for interval in args.switch_intervals:
        sys.setswitchinterval(interval)
        for _ in range(args.rounds):
            for name, write in (("bulk_create", write_orm), ("inserts", write_statements)):
                _empty_tables()
                measured = run(write, rows, args.batch)
                measured.update(path=name, switch_interval=interval)
                results["paths"].append(measured)
                print(f"  {connection.vendor} {name} {interval}: {measured}", file=sys.stderr)
    sys.setswitchinterval(0.005)
    print("RESULT " + json.dumps(results))


def messages(count: int):
    """Message field dicts as `Exchange.to_fields` and the writer make them: a chat with its
    turns, options, a reply of a few hundred characters, cost and category set."""
    start = datetime(2026, 3, 2, tzinfo=UTC)
    words = ["why", "is", "the", "sky", "blue", "rayleigh", "scattering", "of", "sunlight"]
    for index in range(count):
        prompt = " ".join(words[(index + step) % len(words)] for step in range(40))
        response = " ".join(words[(index * 7 + step) % len(words)] for step in range(120))
        yield {
            "request_id": uuid.uuid4(),
            "timestamp": start + timedelta(milliseconds=37 * index),
            "endpoint": ("/api/chat", "/api/generate", "/v1/chat/completions")[index % 3],
            "method": "POST",
            "model": ("llama3.2", "qwen3:8b", "gpt-oss:20b")[index % 3],
            "stream": index % 4 != 0,
            "status": "error" if index % 50 == 0 else "success",
            "http_status": 500 if index % 50 == 0 else 200,
            "user": f"user{index % 40}@example.com",
            "client_ip": "127.0.0.1",
            "user_agent": "ollama-python/0.6.0",
            "prompt": prompt,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": prompt},
            ],
            "options": {"temperature": 0.2, "num_ctx": 8192},
            "response": response,
            "thinking": "",
            "tool_calls": None,
            "truncated": False,
            "done_reason": "stop",
            "error": "",
            "input_tokens": 60 + index % 17,
            "output_tokens": 150 + index % 31,
            "latency_seconds": 0.8 + (index % 13) / 10,
            "ttft_seconds": 0.05 + (index % 7) / 100,
            "tokens_per_second": 180.0,
            "total_duration_seconds": 0.79,
            "load_duration_seconds": 0.01,
            "prompt_eval_duration_seconds": 0.02,
            "eval_duration_seconds": 0.7,
            "cost_usd": 0.0001,
            "category": "chat",
        }


def write_orm(rows: list[dict]) -> tuple[float, float]:
    """The writer before: `bulk_create`, then `executemany` of a one-row upsert per rollup
    table. Returns the seconds of the insert and of the rollups."""
    from django.db import connection

    from proxy import rollups
    from proxy.models import Message, MessageRollup, UserRollup

    started = time.perf_counter()
    Message.objects.bulk_create([Message(**row) for row in rows], batch_size=500)
    inserted = time.perf_counter()
    messages, users = rollups.sums(rows)
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for model, keys, counters, totals in (
            (MessageRollup, rollups.MESSAGE_KEYS, rollups.ROLLUP_SUMS, messages),
            (UserRollup, rollups.USER_KEYS, rollups.USER_ROLLUP_SUMS, users),
        ):
            table = quote(model._meta.db_table)
            columns = (*keys, *counters)
            updates = ", ".join(
                f"{quote(name)} = {table}.{quote(name)} + excluded.{quote(name)}"
                for name in counters
            )
            statement = (
                f"INSERT INTO {table} ({', '.join(quote(name) for name in columns)}) "
                f"VALUES ({', '.join(['%s'] * len(columns))}) "
                f"ON CONFLICT ({', '.join(quote(name) for name in keys)}) DO UPDATE SET {updates}"
            )
            cursor.executemany(statement, [(*key, *values) for key, values in totals.items()])
    return inserted - started, time.perf_counter() - inserted


def write_statements(rows: list[dict]) -> tuple[float, float]:
    """The writer now: `proxy.inserts` and `rollups.add`."""
    from proxy import inserts, rollups

    started = time.perf_counter()
    inserts.insert_messages(rows)
    inserted = time.perf_counter()
    rollups.add(rows)
    return inserted - started, time.perf_counter() - inserted


def run(write, rows: list[dict], batch: int) -> dict:
    """Write `rows` in batches from a thread while the main thread probes the GIL."""
    from django.db import connection, transaction

    parts = {"wall": [], "cpu": [], "insert": [], "rollups": [], "commit": []}

    def writer():
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            began, cpu = time.perf_counter(), time.thread_time()
            with transaction.atomic():
                insert, rollup = write(chunk)
                before_commit = time.perf_counter()
            parts["commit"].append(time.perf_counter() - before_commit)
            parts["insert"].append(insert / len(chunk))
            parts["rollups"].append(rollup)
            parts["wall"].append((time.perf_counter() - began) / len(chunk))
            parts["cpu"].append((time.thread_time() - cpu) / len(chunk))
        connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    lateness = []
    while thread.is_alive():
        lateness.append(_late())
    thread.join()
    from proxy.models import Message

    assert Message.objects.count() == len(rows)
    result = {name: statistics.median(values) * 1e6 for name, values in parts.items()}
    result["total_wall_us_per_row"] = sum(parts["wall"]) / len(parts["wall"]) * 1e6
    result.update(_percentiles(lateness))
    return result


def probe_alone(seconds: float) -> dict:
    lateness = []
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        lateness.append(_late())
    return _percentiles(lateness)


def _late() -> float:
    began = time.perf_counter()
    time.sleep(PROBE_SLEEP)
    return time.perf_counter() - began - PROBE_SLEEP


def _percentiles(lateness: list[float]) -> dict:
    ordered = sorted(lateness)
    return {
        "late_p50_us": ordered[len(ordered) // 2] * 1e6,
        "late_p99_us": ordered[int(len(ordered) * 0.99)] * 1e6,
        "late_max_us": ordered[-1] * 1e6,
        "probes": len(ordered),
    }


def _empty_tables() -> None:
    from django.db import connection

    tables = ("proxy_message", "proxy_messagerollup", "proxy_userrollup")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # CASCADE: tables of other apps may refer to messages (empty in this database).
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")
    connection.close()


# --- the parent --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--switch-intervals",
        type=lambda text: [float(value) for value in text.split(",")],
        default=[0.005],
        help="Seconds, comma-separated: sys.setswitchinterval for each set of rounds.",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as folder:
        urls = {}
        if args.database in ("sqlite", "both"):
            urls["SQLite"] = f"sqlite:///{folder}/writer.sqlite3"
        name = f"bench_writer_{os.getpid()}"
        if args.database in ("postgres", "both"):
            _postgres(args.postgres_url, f'CREATE DATABASE "{name}"')
            urls["PostgreSQL"] = f"{args.postgres_url.rstrip('/')}/{name}"
        try:
            for label, url in urls.items():
                print(f"=== {label} ===", file=sys.stderr)
                command = [sys.executable, __file__, "--child", "--database-url", url]
                command += ["--rows", str(args.rows), "--batch", str(args.batch)]
                command += ["--rounds", str(args.rounds)]
                command += ["--switch-intervals", ",".join(map(str, args.switch_intervals))]
                environment = {**os.environ, "DATA_DIR": folder}
                output = subprocess.run(
                    command, check=True, stdout=subprocess.PIPE, text=True, env=environment
                ).stdout
                line = next(line for line in output.splitlines() if line.startswith("RESULT "))
                results[label] = json.loads(line.removeprefix("RESULT "))
        finally:
            if "PostgreSQL" in urls:
                _postgres(args.postgres_url, f'DROP DATABASE IF EXISTS "{name}"')
    print(table(results, args))


def _postgres(server_url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{server_url.rstrip('/')}/postgres", autocommit=True) as connection:
        connection.execute(statement)


def table(results: dict, args) -> str:
    lines = [
        f"{args.rows:,} messages in batches of {args.batch}, {args.rounds} alternating rounds per "
        f"path (medians of the batches); {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}. Loop lateness: wake-ups of a 0.5 ms sleep in the main "
        "thread while the writer runs.",
        "",
        "| database | path | switch interval (ms) | µs/message wall | µs/message writer CPU "
        "| insert µs/message | rollups µs/batch | commit µs/batch | loop late p50 / p99 / max "
        "(µs) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, result in results.items():
        idle = result["idle"]
        lines.append(
            f"| {label} | no writer | | | | | | | {idle['late_p50_us']:.0f} / "
            f"{idle['late_p99_us']:.0f} / {idle['late_max_us']:.0f} |"
        )
        for path in result["paths"]:
            lines.append(
                f"| {label} | {path['path']} | {path['switch_interval'] * 1000:g} "
                f"| {path['wall']:.1f} | {path['cpu']:.1f} | {path['insert']:.1f} "
                f"| {path['rollups']:.0f} | {path['commit']:.0f} "
                f"| {path['late_p50_us']:.0f} / {path['late_p99_us']:.0f} / "
                f"{path['late_max_us']:.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
