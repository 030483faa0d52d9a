"""How fast the analytics API reads millions of messages.

    .venv/bin/python bench/analytics.py [--n 1000000] [--database sqlite|postgres|both]
        [--postgres-url postgres://postgres@127.0.0.1:5432] [--repeat 30] [--fresh]

Generates N realistic messages (default 1,000,000) straight into a benchmark database of its
own (SQLite in DATA_DIR/bench/, or a `bench_analytics_<n>` PostgreSQL database), with their
rollups and search index built as the recorder builds them, then times through the real
application on loopback (uvicorn, bearer token, the API's JSON): lists with filters, cursor and
offset pages, full-text search for a rare, a medium and a common word, every aggregation
(uncached), the models list, and an export of everything (rows/s; peak Python memory of the
export stream by tracemalloc, for all rows and for a tenth of them: flat memory means the two
peaks are alike). A database generated once is reused by later runs with the same N unless
--fresh. Each database runs in a process of its own (Django's settings are per process); the
tables are printed at the end, ready for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=30)
RARE_WORD, RARE_EVERY = "zanzibar", 50_000  # about 20 messages per million
MEDIUM_WORD = "python"  # in code questions: about one message in six
COMMON_WORD = "the"  # in nearly every message

# --- the child: one database -------------------------------------------------------------------


def child(args) -> None:
    os.environ["DATABASE_URL"] = args.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ollama_monitor.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    settings.ANALYTICS_CACHE_SECONDS = 0  # time the queries, not the cache
    settings.RECORDER_SPOOL_DIR = Path(settings.DATA_DIR) / "bench" / "spool"
    call_command("migrate", verbosity=0)
    from proxy.models import Message

    existing = Message.objects.count()
    if existing != args.n:
        if existing:
            _empty_tables()
        started = time.perf_counter()
        generate(args.n, seed=args.seed)
        loaded = time.perf_counter() - started
        print(f"generated {args.n} messages in {loaded:.0f} s", file=sys.stderr)
    else:
        loaded = None
    _analyse(connection)
    results = measure(args)
    results["generated_seconds"] = loaded
    results["database"] = connection.vendor
    results["n"] = args.n
    print("RESULT " + json.dumps(results))


def _empty_tables() -> None:
    from django.db import connection

    tables = ("proxy_message", "proxy_messagerollup", "proxy_userrollup")
    tables += ("proxy_seriesrollup", "proxy_usertotalrollup")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")
            cursor.execute("VACUUM")


def _analyse(connection) -> None:
    """The state a database settles in: fresh planner statistics (and on PostgreSQL the
    visibility map that index-only scans need), as autovacuum or `PRAGMA optimize` give."""
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")


# --- generating --------------------------------------------------------------------------------

_VOCABULARY = """
the a of to and in is it you that for on with as this be are or how can what do not
model data file list value time function error string number user code page table text
make use find need help please write explain give show return get set run test build
simple fast small large first last new old best good better more most each every any
system server client request response query search index memory cache network thread
process loop array object class method module package import export type field key
json yaml html css sql shell bash docker linux windows email report meeting summary
customer order invoice product price market sales team project plan week month year
story poem joke recipe travel city weather music movie book history science math
health sleep coffee garden energy climate ocean mountain river forest animal bird
"""
WORDS = _VOCABULARY.split()
LANGUAGES = ("French", "German", "Spanish", "Italian", "Japanese", "Portuguese")
TEMPLATES = {
    "code": (
        "Write a python function that {}",
        "Why does this code raise an error? {}",
        "Refactor the following function to be simpler: {}",
        "Explain this SQL query: SELECT {} FROM orders",
    ),
    "translation": ("Translate the following text into {lang}: {}",),
    "summarisation": ("Summarize the following in three bullet points: {}",),
    "extraction": ("Extract the names and dates as JSON from: {}",),
    "classification": ("Classify the sentiment of the following review: {}",),
    "chat": ("Tell me about {}", "What is the best way to {}?", "Can you help me with {}?"),
    "completion": ("Once upon a time {}", "The report concludes that {}"),
    "embedding": ("{}",),
}
KINDS = list(TEMPLATES)
KIND_WEIGHTS = [20, 8, 10, 7, 5, 35, 5, 10]
CHAT_MODELS = [("llama3.2:3b", 35, 62.0), ("qwen3:8b", 25, 34.0), ("mistral:7b", 15, 41.0)]
CHAT_MODELS += [("gpt-oss:20b", 10, 19.0), ("llava:7b", 5, 30.0)]
EMBED_MODEL = "nomic-embed-text"


def _phrases(rng: random.Random, count: int) -> list[str]:
    """Phrases drawn from a Zipf-like vocabulary: common words in most, rare ones in few."""
    weights = [1 / (rank + 1) ** 0.9 for rank in range(len(WORDS))]
    vocabulary = WORDS + [f"term{index}" for index in range(20_000)]
    weights += [0.02 / (rank + 1) ** 0.5 for rank in range(20_000)]
    return [" ".join(rng.choices(vocabulary, weights, k=rng.randint(6, 24))) for _ in range(count)]


def messages(n: int, seed: int):
    """N message field dicts in time order, as the recorder's writer makes them."""
    from proxy import costs
    from proxy.models import ModelPrice

    rng = random.Random(seed)
    phrases = _phrases(rng, 20_000)
    users = [f"user{index}@example.com" for index in range(400)] + [
        f"10.0.{index // 250}.{index % 250}" for index in range(100)
    ]
    user_weights = [1 / (rank + 1) for rank in range(len(users))]
    prices = costs.PriceBook(
        [
            ModelPrice(
                model_pattern="gpt-oss*", input_usd_per_million=0.15, output_usd_per_million=0.6
            ),
            ModelPrice(model_pattern="*", usd_per_second="0.00005"),
        ]
    )
    step = SPAN / n
    for index in range(n):
        kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
        text = " ".join(rng.choice(phrases) for _ in range(rng.randint(1, 4)))
        if index % RARE_EVERY == 7:
            text += f" {RARE_WORD}"
        prompt = rng.choice(TEMPLATES[kind]).format(text, lang=rng.choice(LANGUAGES))
        if kind == "embedding":
            model, endpoint, speed = EMBED_MODEL, "/api/embed", None
        else:
            model, _, speed = rng.choices(CHAT_MODELS, [w for _, w, _ in CHAT_MODELS])[0]
            if kind == "completion":
                endpoint = rng.choice(["/api/generate", "/v1/completions"])
            else:
                endpoint = rng.choices(["/api/chat", "/v1/chat/completions"], [6, 4])[0]
        status = rng.choices(["success", "error", "cancelled"], [955, 35, 10])[0]
        input_tokens = int(len(prompt.split()) * 1.3) + 24
        ttft = rng.lognormvariate(math.log(0.25), 0.6)
        if speed is None:
            response, output_tokens, rate, latency = "", None, None, ttft
        else:
            response = " ".join(rng.choice(phrases) for _ in range(rng.randint(2, 10)))
            output_tokens = int(len(response.split()) * 1.3)
            rate = speed * rng.lognormvariate(0, 0.2)
            latency = ttft + output_tokens / rate
        error = ""
        if status == "error":
            response, output_tokens, rate = "", None, None
            error = rng.choice(["model not found, try pulling it first", "server busy"])
        elif status == "cancelled":
            response = response[: len(response) // 3]
        fields = {
            "timestamp": START + step * index + timedelta(microseconds=rng.randint(0, 999)),
            "endpoint": endpoint,
            "model": model,
            "stream": endpoint != "/api/embed" and rng.random() < 0.8,
            "status": status,
            "http_status": 500 if status == "error" else 200,
            "user": rng.choices(users, user_weights)[0],
            "client_ip": "10.0.0.1",
            "prompt": prompt,
            "response": response,
            "error": error,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "latency_seconds": latency,
            "ttft_seconds": ttft,
            "tokens_per_second": rate,
            "total_duration_seconds": latency * 0.98,
            "category": kind,
        }
        fields["cost_usd"] = prices.cost_usd(fields)
        yield fields


def generate(n: int, seed: int, batch: int = 5000) -> None:
    """Insert as the writer does: rows and rollups together, a transaction per batch."""
    import uuid

    from django.db import transaction

    from proxy import rollups
    from proxy.models import Message

    rows = []
    done = 0
    for fields in messages(n, seed):
        fields["request_id"] = uuid.uuid4()
        rows.append(fields)
        if len(rows) == batch:
            with transaction.atomic():
                Message.objects.bulk_create([Message(**row) for row in rows])
                rollups.add(rows)
            done += len(rows)
            rows = []
            if done % 100_000 == 0:
                print(f"  {done} messages", file=sys.stderr)
    if rows:
        with transaction.atomic():
            Message.objects.bulk_create([Message(**row) for row in rows])
            rollups.add(rows)


# --- measuring ---------------------------------------------------------------------------------


def measure(args) -> dict:
    import httpx
    from django.contrib.auth import get_user_model

    from analytics.models import ApiToken
    from proxy.models import Message

    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_superuser": True}
    )
    _, secret = ApiToken.issue(user, "bench")
    end = START + SPAN
    epoch = lambda moment: int(moment.timestamp())  # noqa: E731
    top_user = "user0@example.com"  # the most active (Zipf weights)
    middle = Message.objects.order_by("-timestamp", "-id").values_list("timestamp", "id")[
        args.n // 2
    ]
    from analytics.filters import encode_cursor

    deep_cursor = encode_cursor(middle)
    cases = [
        ("list", "newest 50", "/messages", {}),
        ("list", "model", "/messages", {"model": "mistral:7b"}),
        ("list", "status=error", "/messages", {"status": "error"}),
        ("list", "category", "/messages", {"category": "translation"}),
        ("list", "user", "/messages", {"user": top_user}),
        (
            "list",
            "24 h + model + latency + tokens",
            "/messages",
            {
                "start_time": epoch(end - timedelta(days=1)),
                "end_time": epoch(end),
                "model": "qwen3:8b",
                "min_latency": 1,
                "min_output_tokens": 20,
            },
        ),
        ("list", "cursor, middle of the table", "/messages", {"cursor": deep_cursor}),
        ("list", "offset 10,000 (compat)", "/messages", {"offset": 10_000}),
        ("list", "1000 rows", "/messages", {"limit": 1000}),
        ("search", f"rare word ({RARE_WORD})", "/messages", {"search": RARE_WORD}),
        ("search", f"medium word ({MEDIUM_WORD})", "/messages", {"search": MEDIUM_WORD}),
        ("search", f"common word ({COMMON_WORD})", "/messages", {"search": COMMON_WORD}),
        (
            "search",
            "two words + model",
            "/messages",
            {"search": "python function", "model": "qwen3:8b"},
        ),
        ("aggregations", "all, 1h series (720 points)", "/aggregations", {"interval": "1h"}),
        ("aggregations", "all, 1d series", "/aggregations", {"interval": "1d"}),
        ("aggregations", "all, 1w series", "/aggregations", {"interval": "1w"}),
        (
            "aggregations",
            "model + status, 1d",
            "/aggregations",
            {"interval": "1d", "model": "llama3.2:3b", "status": "success"},
        ),
        (
            "aggregations",
            "last 24 h, 5m series",
            "/aggregations",
            {"interval": "5m", "start_time": epoch(end - timedelta(days=1))},
        ),
        (
            "aggregations",
            "7 days at odd seconds, 1m... 1h",
            "/aggregations",
            {
                "interval": "1h",
                "start_time": epoch(end - timedelta(days=9)) + 37.25,
                "end_time": epoch(end - timedelta(days=2)) + 1234.5,
            },
        ),
        (
            "aggregations",
            "last hour, 1m series",
            "/aggregations",
            {"interval": "1m", "start_time": epoch(end - timedelta(hours=1))},
        ),
        ("aggregations", "models list", "/models", {}),
        (
            "scan",
            f"aggregations, search {RARE_WORD}",
            "/aggregations",
            {"search": RARE_WORD, "interval": "1d"},
        ),
        ("scan", "aggregations, one user", "/aggregations", {"user": top_user, "interval": "1d"}),
    ]
    server = Uvicorn(args.database_url)
    results = {"cases": [], "export": []}
    try:
        with httpx.Client(
            base_url=f"{server.url}/analytics",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=600,
        ) as client:
            for group, name, path, params in cases:
                if args.only and group not in args.only:
                    continue
                repeat = args.repeat if group != "scan" else max(3, args.repeat // 10)
                timings, size = _time(client, path, params, repeat)
                results["cases"].append(
                    {
                        "group": group,
                        "name": name,
                        "p50_ms": statistics.median(timings) * 1000,
                        "p95_ms": _p95(timings) * 1000,
                        "rows": size,
                    }
                )
                print(f"  {group:13} {name:40} p95 {_p95(timings) * 1000:8.1f} ms", file=sys.stderr)
            results["server_peak_rss_mb_before_export"] = server.peak_rss_mb()
            for export_format in ("csv", "jsonl") if not args.only else ():
                started = time.perf_counter()
                with client.stream("GET", "/export", params={"format": export_format}) as response:
                    size = sum(len(chunk) for chunk in response.iter_raw())
                seconds = time.perf_counter() - started
                results["export"].append(
                    {
                        "format": export_format,
                        "rows": args.n,
                        "seconds": seconds,
                        "rows_per_second": args.n / seconds,
                        "megabytes": size / 1e6,
                    }
                )
                print(f"  export {export_format}: {args.n / seconds:,.0f} rows/s", file=sys.stderr)
            results["server_peak_rss_mb_after_export"] = server.peak_rss_mb()
    finally:
        server.stop()
    if not args.only:
        results["memory"] = {
            "all": _export_peak(None),
            "tenth": _export_peak(START + SPAN * 0.9),
        }
    return results


class Uvicorn:
    """The application as `make run` serves it, in a process of its own (not a thread of this
    one: a server sharing the benchmark's GIL measures the GIL)."""

    def __init__(self, database_url: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = os.environ | {"DATABASE_URL": database_url, "ANALYTICS_CACHE_SECONDS": "0"}
        command = [sys.executable, "-m", "uvicorn", "ollama_monitor.asgi:application"]
        command += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
        command += ["--no-access-log", "--log-level", "warning"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, urllib.error.URLError):
                urllib.request.urlopen(f"{self.url}/analytics/openapi.json", timeout=2)
                return
            if self.process.poll() is not None:
                raise RuntimeError("uvicorn exited at start")
            time.sleep(0.2)
        raise RuntimeError("uvicorn did not answer within 60 s")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def _time(client, path, params, repeat) -> tuple[list[float], int]:
    response = client.get(path, params=params)  # warm (and check)
    assert response.status_code == 200, (path, params, response.text[:500])
    body = response.json()
    size = len(body.get("messages", body.get("models", body.get("messages_by_time", []))))
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path, params=params)
        response.read()
        timings.append(time.perf_counter() - started)
    return timings, size


def _p95(timings: list[float]) -> float:
    ordered = sorted(timings)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def _export_peak(since) -> dict:
    """Peak Python memory (tracemalloc) while streaming a CSV export in this process."""
    import asyncio

    from analytics import export
    from proxy.models import Message

    messages = (
        Message.objects.all() if since is None else Message.objects.filter(timestamp__gte=since)
    )

    async def drain():
        rows = 0
        async for chunk in export.stream(messages, export.CsvEncoder(), content=True):
            rows += chunk.count(b"\n")
        return rows

    tracemalloc.start()
    try:
        rows = asyncio.run(drain())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"rows": rows - 1, "peak_mb": peak / 1e6}


# --- the parent: each database, then the tables ------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--fresh", action="store_true", help="Generate the data again.")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["list", "search", "aggregations", "scan"],
        help="Time only these groups (no export, no table); for working on one of them.",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    data_dir = Path(os.environ.get("DATA_DIR", ROOT / "data"))
    urls = {}
    if args.database in ("sqlite", "both"):
        path = data_dir / "bench" / f"analytics-{args.n}.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        if args.fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        urls["SQLite"] = f"sqlite:///{path}"
    if args.database in ("postgres", "both"):
        name = f"bench_analytics_{args.n}"
        _create_postgres_database(args.postgres_url, name, args.fresh)
        urls["PostgreSQL"] = f"{args.postgres_url.rstrip('/')}/{name}"

    results = {}
    for label, url in urls.items():
        print(f"=== {label} ({args.n:,} messages) ===", file=sys.stderr)
        command = [sys.executable, __file__, "--child", "--database-url", url]
        command += ["--n", str(args.n), "--repeat", str(args.repeat), "--seed", str(args.seed)]
        command += ["--only", *args.only] if args.only else []
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        line = next(line for line in output.splitlines() if line.startswith("RESULT "))
        results[label] = json.loads(line.removeprefix("RESULT "))
    if not args.only:
        print(tables(results, args))


def _create_postgres_database(server_url: str, name: str, fresh: bool) -> None:
    import psycopg

    with psycopg.connect(f"{server_url.rstrip('/')}/postgres", autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if exists and fresh:
            connection.execute(f'DROP DATABASE "{name}"')
            exists = None
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')


def tables(results: dict, args) -> str:
    labels = list(results)
    lines = [
        f"{args.n:,} messages over 30 days; p50 / p95 of {args.repeat} requests over loopback "
        f"HTTP (uvicorn, bearer token), aggregations uncached. {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        "| what | " + " | ".join(f"{label} p50 / p95 (ms)" for label in labels) + " | rows |",
        "|---|" + "---|" * len(labels) + "---|",
    ]
    first = results[labels[0]]["cases"]
    for index, case in enumerate(first):
        cells = []
        for label in labels:
            measured = results[label]["cases"][index]
            cells.append(f"{measured['p50_ms']:.1f} / {measured['p95_ms']:.1f}")
        lines.append(
            f"| {case['group']}: {case['name']} | " + " | ".join(cells) + f" | {case['rows']} |"
        )
    lines += ["", "| export | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for index, export in enumerate(results[labels[0]]["export"]):
        cells = []
        for label in labels:
            measured = results[label]["export"][index]
            cells.append(
                f"{measured['rows_per_second']:,.0f} rows/s ({measured['seconds']:.1f} s, "
                f"{measured['megabytes']:.0f} MB)"
            )
        lines.append(f"| {export['format']}, all rows | " + " | ".join(cells) + " |")
    for key, name in (("tenth", "a tenth of the rows"), ("all", "all rows")):
        cells = []
        for label in labels:
            memory = results[label]["memory"][key]
            cells.append(f"{memory['peak_mb']:.1f} MB ({memory['rows']:,} rows)")
        lines.append(
            f"| peak Python memory of the CSV stream, {name} | " + " | ".join(cells) + " |"
        )
    cells = [
        f"{results[label]['server_peak_rss_mb_before_export']:.0f} MB before, "
        f"{results[label]['server_peak_rss_mb_after_export']:.0f} MB after"
        for label in labels
    ]
    lines.append("| server's peak RSS (VmHWM) around both exports | " + " | ".join(cells) + " |")
    generated = [results[label]["generated_seconds"] for label in labels]
    if any(generated):
        cells = [f"{value:.0f} s" if value else "reused" for value in generated]
        lines.append(
            "| generating the data (rows, rollups, search index) | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
