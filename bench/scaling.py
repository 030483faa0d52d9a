"""Does the proxy scale with workers? One worker against two, with an upstream that costs nothing.

    .venv/bin/python bench/scaling.py [--seconds 4] [--rounds 3] [--connections 32]
                                      [--database sqlite|postgres]

On a 2-core machine `bench/proxy.py` cannot show it: the simulated Ollama and the load generator
already use what the second core has, so a second worker has nothing to run on. Here the
upstream is nginx answering `/api/generate` with a fixed Ollama reply (`return 200`, a few µs
of CPU) and the load is wrk (one thread, a few µs per request), so that the proxy is nearly all
the work. The proxy runs as `make run` starts it (uvicorn with uvloop and httptools, SQLite or
with `--database postgres` a fresh PostgreSQL database, recording on; `--workers 2` with the
multiprocess metrics folder), unpinned. Each worker count
is measured in turn, in rounds, and after the run each proxy is stopped with SIGTERM and its
messages counted against the requests wrk completed (wrk's in-flight requests at each stop are
recorded too, so recorded ≥ completed).

Prints requests/s per round and the ratio of two workers to one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import records
import servers

REPLY = (
    '{"model":"llama3.2","created_at":"2026-01-01T00:00:00.000000000Z",'
    '"response":"The sky is blue because of Rayleigh scattering.","done":true,'
    '"done_reason":"stop","total_duration":1000000,"load_duration":1000,'
    '"prompt_eval_count":10,"prompt_eval_duration":1000,"eval_count":10,"eval_duration":100000}'
)
# An Ollama that answers at once with a fixed reply: the upstream of the scaling benchmark.
CANNED = """\
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location = / {{ default_type text/plain; return 200 "Ollama is running"; }}
        location = /api/tags {{ return 200 '{{"models":[]}}'; }}
        location = /api/generate {{ return 200 '{reply}'; }}
    }}"""
BODY = b'{"model":"llama3.2","prompt":"Why is the sky blue?","stream":false}'


def start_proxy(
    workdir: Path, upstream: str, workers: int, database_url: str | None
) -> tuple[servers.Server, Path]:
    data_dir = workdir / f"proxy-{workers}"
    env = servers.proxy_environment(upstream, data_dir, database_url, workers)
    log = workdir / f"proxy-{workers}.log"
    servers.migrate(env, log)
    proxy = servers.start_proxy(
        f"proxy x{workers}", env, log, server="uvicorn", workers=workers, cpus=None
    )
    return proxy, data_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per round and worker count")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    options = parser.parse_args()
    if shutil.which("wrk") is None or servers.nginx_binary() is None:
        print("needs wrk and nginx: apt-get install -y wrk nginx", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    print(f"cores: {os.cpu_count()}; load average: {os.getloadavg()[0]:.2f}; {options.database}")
    print(f"work directory (logs): {workdir}")
    upstream = servers.run_nginx(workdir, "canned", CANNED, None, reply=REPLY)
    databases = {1: None, 2: None}
    if options.database == "postgres":
        for workers in databases:
            name = f"bench_scaling_{os.getpid()}_{workers}"
            databases[workers] = (name, records.create_postgres_database(name))
    proxies = {
        workers: start_proxy(workdir, upstream.url, workers, database and database[1])
        for workers, database in databases.items()
    }
    headers = {"X-Bench-Case": "scaling"}
    rates: dict[str, list[float]] = {"upstream": [], "x1": [], "x2": []}
    completed = {1: 0, 2: 0}
    try:
        targets = [("upstream", upstream.url, None)] + [
            (f"x{workers}", proxy.url, workers) for workers, (proxy, _) in proxies.items()
        ]
        for _name, url, _workers in targets:  # warm up
            servers.run_wrk(url, "/api/generate", BODY, headers, 8, 1, workdir, None)
        for round_number in range(options.rounds):
            for name, url, workers in targets:
                before = _cpu_times()
                result = servers.run_wrk(
                    url,
                    "/api/generate",
                    BODY,
                    headers,
                    options.connections,
                    options.seconds,
                    workdir,
                    None,
                )
                busy = _busy_cores(before, _cpu_times())
                rates[name].append(result["rate"])
                if workers:
                    completed[workers] += result["completed"]
                print(
                    f"round {round_number + 1}  {name:9s} {result['rate']:9.1f} req/s  "
                    f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
                    f"non-2xx {result['non_2xx']}  machine busy {busy:.2f} cores",
                    flush=True,
                )
    finally:
        counts = {}
        for workers, (proxy, data_dir) in proxies.items():
            proxy.stop()
            database = databases[workers]
            counts[workers] = sum(records.recorded(database and database[1], data_dir).values())
            if database:
                records.drop_postgres_database(database[0])
        upstream.stop()
    one, two = statistics.median(rates["x1"]), statistics.median(rates["x2"])
    print()
    print(f"canned upstream alone (wrk):  {statistics.median(rates['upstream']):9.1f} req/s")
    print(f"proxy, 1 worker:              {one:9.1f} req/s (median of {options.rounds})")
    print(f"proxy, 2 workers:             {two:9.1f} req/s")
    print(f"2 workers ÷ 1:                {two / one:9.2f}")
    for workers in (1, 2):
        print(
            f"recorded by {workers} worker(s): {counts[workers]} messages for "
            f"{completed[workers]} completed requests (+ warm-up and in-flight ones)"
        )
    return 0


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def _busy_cores(before: tuple[int, int], after: tuple[int, int]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total * (os.cpu_count() or 1) if total else 0.0


if __name__ == "__main__":
    sys.exit(main())
