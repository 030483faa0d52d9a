"""How much the proxy costs: the same load direct to a simulated Ollama, via nginx, via the proxy.

    .venv/bin/python bench/proxy.py [--quick] [--database sqlite|postgres|both] [--no-pin]
        [--also LABEL:NAME=VALUE[,NAME=VALUE]]

Starts on loopback the simulated Ollama with pacing off, nginx with a plain `proxy_pass` config
(when installed), and the proxy as users run it (uvicorn with uvloop and httptools, recording
on) on SQLite and on PostgreSQL; in a full run also under granian (when installed) for the
ASGI-server comparison, and with two uvicorn workers. Every case is
sent to every path in turn, so a disturbance on the machine hits all of them alike; results are
ratios against the direct path and nginx measured in the same run. Then, unpinned, the proxy
with one worker against two. At the end each proxy is stopped with SIGTERM (it flushes its
recorder) and its messages are counted against the requests sent, per case. `--also` adds a
SQLite proxy with other settings to the same run (an A/B of a setting, e.g. the writer's pacing:
`--also paced:RECORDER_PACE=1`).

On a 2-core machine the load generator competes with the servers, so by default the generator
(this process and wrk) runs on CPU 1 and every server on CPU 0: requests per second then measure
the servers' CPU cost per request, undiluted by the client's. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import load
import records
import servers
import uvloop

CLIENT_CPUS, SERVER_CPUS = {1}, "0"
SHORT_STREAM_TOKENS = 10
BENCH_NICE = -10
CHAT_BODY = {"model": "llama3.2", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}
# Fields that differ between two otherwise identical replies (clocks and ids).
VOLATILE_FIELDS = {
    "created_at",
    "created",
    "id",
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
}


def _body(**fields) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    load: load.Load
    connections: int
    lines: int = 1  # NDJSON lines (or SSE data frames) per reply, for per-chunk figures
    slow: bool = False
    wrk: bool = False


def cases(quick: bool) -> list[Case]:
    generate = load.Load(
        "/api/generate", _body(model="llama3.2", prompt="Why is the sky blue?", stream=False), {}
    )
    chat = load.Load("/api/chat", _body(**CHAT_BODY), {"X-Sim-Tokens": "100"})
    openai = load.Load(
        "/v1/chat/completions", _body(**CHAT_BODY, stream=True), {"X-Sim-Tokens": "100"}
    )
    slow_tokens = 60 if quick else 200

    def slow(tokens: int) -> load.Load:
        headers = {"X-Sim-Tokens": str(tokens), "X-Sim-TPS": "20"}
        return load.Load("/api/chat", _body(**CHAT_BODY), headers)

    return [
        Case("generate-c1", "/api/generate, not streamed, 1 connection", generate, 1),
        Case("generate-c16", "/api/generate, not streamed, 16 connections", generate, 16),
        Case(
            "wrk-generate-c16", "/api/generate, not streamed, 16 conn., wrk", generate, 16, wrk=True
        ),
        Case("chat-c1", "/api/chat streamed, 100 chunks, 1 connection", chat, 1, lines=101),
        Case("chat-c4", "/api/chat streamed, 100 chunks, 4 connections", chat, 4, lines=101),
        Case("chat-c16", "/api/chat streamed, 100 chunks, 16 connections", chat, 16, lines=101),
        # 100 content frames, the finish frame and [DONE].
        Case(
            "openai-c4", "/v1/chat/completions streamed, 100 chunks, 4 conn.", openai, 4, lines=102
        ),
        # Two lengths at the same pace: the difference in CPU per stream is the cost of the
        # extra chunks alone (each arrives on its own), without the per-request costs.
        Case(
            "slow-short-c100",
            f"100 slow streams at 20 tokens/s ({SHORT_STREAM_TOKENS} tokens each)",
            slow(SHORT_STREAM_TOKENS),
            100,
            lines=SHORT_STREAM_TOKENS + 1,
            slow=True,
        ),
        Case(
            "slow-c100",
            f"100 slow streams at 20 tokens/s ({slow_tokens} tokens each)",
            slow(slow_tokens),
            100,
            lines=slow_tokens + 1,
            slow=True,
        ),
    ]


@dataclass
class Target:
    """One path to the simulator: direct, nginx, or a proxy."""

    label: str
    url: str
    box: servers.Server | None = None  # the process between client and simulator
    database_url: str | None = None
    data_dir: Path | None = None
    sent: dict[str, int] = field(default_factory=dict)  # per case tag
    in_flight_at_stop: dict[str, int] = field(default_factory=dict)  # wrk's aborted requests

    @property
    def is_proxy(self) -> bool:
        return self.data_dir is not None


@dataclass
class Measurement:
    case: str
    target: str
    requests: int
    errors: int
    rate: float
    p50: float  # milliseconds
    p99: float
    ttft_p50: float
    ttft_p99: float
    box_cpu_per_request: float  # microseconds, the process between client and simulator
    box_main_thread_cpu_per_request: float  # of which its event loops (the rest: the writer)
    simulator_cpu_per_request: float
    rss_peak: float  # MB, largest process of the box
    rss_total: float  # MB, all processes of the box
    newline_counts: list[int]
    same_lines_as_direct: bool | None
    first_error: str = ""


class Bench:
    def __init__(self, options):
        self.options = options
        self.quick = options.quick
        self.duration = 1.5 if options.quick else 4.0
        self.warmup = 0.3 if options.quick else 0.5
        self.rounds = 2 if options.quick else 4
        self.pin = not options.no_pin
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
        self.runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        self.simulator: servers.Server | None = None
        self.started: list[servers.Server] = []
        self.targets: dict[str, Target] = {}
        self.results: list[Measurement] = []
        self.direct_samples: dict[str, tuple[list, list[int]]] = {}
        self.notes: list[str] = []
        self.postgres_databases: list[str] = []

    # --- setting up -------------------------------------------------------------------------

    def start(self) -> None:
        server_cpus = SERVER_CPUS if self.pin else None
        # Every process of the benchmark inherits this priority: the scheduler shares a core by
        # weight per task, so at equal priority another program on the machine takes a larger
        # share from a path with one process (direct) than from one with two (nginx, proxy).
        try:
            os.setpriority(os.PRIO_PROCESS, 0, BENCH_NICE)
        except PermissionError:
            self.notes.append(f"could not raise the priority (nice {BENCH_NICE}): run as root")
        if self.pin:
            os.sched_setaffinity(0, CLIENT_CPUS)
        self.simulator = self._keep(servers.start_simulator(self.workdir, server_cpus))
        self.targets["direct"] = Target("direct", self.simulator.url)
        nginx = servers.start_nginx(self.workdir, self.simulator.port, server_cpus)
        if nginx is None:
            self.notes.append("nginx is not installed: no nginx baseline (apt-get install nginx)")
        else:
            self._keep(nginx)
            self.targets["nginx"] = Target("nginx", nginx.url, box=nginx)

        databases = self.options.database
        if databases in ("sqlite", "both"):
            self._start_proxy("proxy sqlite", database=None, server="uvicorn", workers=1)
        if databases in ("postgres", "both"):
            if records.postgres_reachable():
                self._start_proxy(
                    "proxy postgres", database="postgres", server="uvicorn", workers=1
                )
            else:
                self.notes.append(f"PostgreSQL not reachable at {records.POSTGRES_URL}: skipped")
        for label, overrides in self.options.also:
            self._start_proxy(
                f"proxy {label}", database=None, server="uvicorn", workers=1, overrides=overrides
            )
        if not self.quick and databases in ("sqlite", "both"):
            if servers.granian_available():
                self._start_proxy("granian sqlite", database=None, server="granian", workers=1)
            else:
                self.notes.append("granian is not installed in the venv: no ASGI server comparison")
            self._start_proxy(
                "proxy sqlite x2", database=None, server="uvicorn", workers=2, pinned=False
            )

    def _keep(self, server: servers.Server) -> servers.Server:
        self.started.append(server)
        return server

    def _start_proxy(
        self, label, *, database, server, workers, pinned=True, overrides=None
    ) -> None:
        slug = label.replace(" ", "-")
        data_dir = self.workdir / slug
        database_url = None
        if database == "postgres":
            name = f"bench_proxy_{os.getpid()}_{len(self.postgres_databases)}"
            database_url = records.create_postgres_database(name)
            self.postgres_databases.append(name)
        env = servers.proxy_environment(self.simulator.url, data_dir, database_url, workers)
        env.update(overrides or {})
        servers.migrate(env, self.workdir / f"{slug}.log")
        cpus = SERVER_CPUS if self.pin and pinned else None
        proxy = self._keep(
            servers.start_proxy(
                label, env, self.workdir / f"{slug}.log", server=server, workers=workers, cpus=cpus
            )
        )
        self.targets[label] = Target(
            label, proxy.url, box=proxy, database_url=database_url, data_dir=data_dir
        )

    # --- measuring --------------------------------------------------------------------------

    def measure(self, case: Case, targets: list[Target], section: str) -> list[Measurement]:
        """One case on every path, in rounds: a few slices per path in turn, so that a
        disturbance on the machine (another process waking up) is spread over all paths."""
        tag = f"{section}:{case.name}"
        request = load.Load(
            case.load.path, case.load.body, {**case.load.headers, "X-Bench-Case": tag}
        )
        rounds = 1 if case.slow else self.rounds
        tallies = {target.label: Tally() for target in targets}
        if not case.slow and not case.wrk:
            for target in targets:
                warm = self.runner.run(
                    load.run(target.url, request, case.connections, duration=self.warmup, samples=0)
                )
                target.sent[tag] = target.sent.get(tag, 0) + warm.sent
        for _ in range(rounds):
            for target in targets:
                self._slice(
                    case, target, request, tag, self.duration / rounds, tallies[target.label]
                )
        measurements = []
        for target in targets:
            tally = tallies[target.label]
            if case.wrk and not tally.wrk_rounds:
                continue  # no wrk
            measurements.append(tally.measurement(case, target, self._compare_lines))
        return measurements

    def _slice(self, case, target, request, tag, seconds, tally: Tally) -> None:
        before = self._cpu(target)
        with RssSampler(target.box) as sampler:
            if case.wrk:
                outcome = servers.run_wrk(
                    target.url,
                    request.path,
                    request.body,
                    request.headers,
                    case.connections,
                    seconds,
                    self.workdir,
                    cpus=None,  # inherits this process's CPU
                )
            elif case.slow:
                result = self.runner.run(
                    load.run(target.url, request, case.connections, requests_per_connection=1)
                )
            else:
                result = self.runner.run(
                    load.run(target.url, request, case.connections, duration=seconds)
                )
        time.sleep(0.3)  # let the recorder write its last batch: the writes are part of the cost
        after = self._cpu(target)
        tally.cpu = [t + (b - a) for t, a, b in zip(tally.cpu, before, after, strict=True)]
        tally.rss_peak = max(tally.rss_peak, sampler.peak)
        tally.rss_total = max(tally.rss_total, sampler.peak_total)
        if case.wrk:
            if outcome is None:
                return
            # wrk stops with requests in flight; the proxy records those too.
            target.sent[tag] = target.sent.get(tag, 0) + outcome["completed"]
            target.in_flight_at_stop[tag] = target.in_flight_at_stop.get(tag, 0) + case.connections
            tally.wrk_rounds.append(outcome)
        else:
            target.sent[tag] = target.sent.get(tag, 0) + result.sent
            tally.add(result)

    def _cpu(self, target: Target) -> tuple[float, float, float]:
        """CPU seconds so far: the box's main threads, its other threads, the simulator."""
        main, other = target.box.cpu_seconds_split() if target.box else (0.0, 0.0)
        return main, other, self.simulator.cpu_seconds()

    def _compare_lines(self, case: Case, target: Target, result: load.Result) -> bool | None:
        """Same NDJSON lines (or SSE frames), in the same order, as the direct path gave."""
        samples = [normalized(sample) for sample in result.samples]
        newlines = sorted(result.newline_counts)
        if target.label == "direct":
            self.direct_samples[case.name] = (samples, newlines)
            return None
        if case.name not in self.direct_samples or not samples:
            return None
        reference, reference_newlines = self.direct_samples[case.name]
        return newlines == reference_newlines and all(s == reference[0] for s in samples)

    def run_matrix(self) -> None:
        section = "pinned" if self.pin else "unpinned"
        matrix = [t for label, t in self.targets.items() if label != "proxy sqlite x2"]
        for case in cases(self.quick):
            for measurement in self.measure(case, matrix, section):
                self.results.append(measurement)
                print(_progress(section, measurement), file=sys.stderr, flush=True)

    def run_scaling(self) -> None:
        """One worker against two, every process free to use both cores."""
        if "proxy sqlite x2" not in self.targets:
            return
        for server in self.started:
            server.set_affinity({0, 1})
        os.sched_setaffinity(0, {0, 1})
        labels = ["direct", "nginx", "proxy sqlite", "proxy sqlite x2"]
        targets = [self.targets[label] for label in labels if label in self.targets]
        scaling = {"generate-c16", "wrk-generate-c16", "chat-c16"}
        for case in cases(self.quick):
            if case.name not in scaling:
                continue
            for measurement in self.measure(case, targets, "scaling"):
                measurement.case = "scaling:" + case.name
                self.results.append(measurement)
                print(_progress("scaling", measurement), file=sys.stderr, flush=True)

    # --- finishing --------------------------------------------------------------------------

    def stop_and_count(self) -> dict[str, dict]:
        """Stop every proxy gracefully, then compare its records with the requests sent."""
        counts = {}
        for target in self.targets.values():
            if not target.is_proxy:
                continue
            code = target.box.stop(signal.SIGTERM)
            found = records.recorded(target.database_url, target.data_dir)
            per_case = {}
            for tag, sent in sorted(target.sent.items()):
                success = found.get((tag, "success"), 0)
                other = {
                    status: n
                    for (user, status), n in found.items()
                    if user == tag and status != "success"
                }
                slack = target.in_flight_at_stop.get(tag, 0)
                total = success + sum(other.values())
                per_case[tag] = {
                    "sent": sent,
                    "success": success,
                    "other": other,
                    # wrk counts only the replies it read before stopping: in-flight ones are
                    # recorded too (as success or cancelled), so up to `slack` more are expected.
                    "equal": sent <= total <= sent + slack if slack else total == sent == success,
                }
            counts[target.label] = {
                "exit_code": code,
                "cases": per_case,
                "sent": sum(target.sent.values()),
                "recorded": sum(found.values()),
                "spool_files": records.spooled(target.data_dir),
            }
        return counts

    def close(self) -> None:
        for server in reversed(self.started):
            server.stop(signal.SIGQUIT if server.name == "nginx" else signal.SIGTERM)
        for name in self.postgres_databases:
            with contextlib.suppress(Exception):
                records.drop_postgres_database(name)
        self.runner.close()


class Tally:
    """What the slices of one case on one path add up to."""

    def __init__(self):
        self.result = load.Result()
        self.cpu = [0.0, 0.0, 0.0]  # box main threads, box other threads, simulator
        self.rss_peak = 0
        self.rss_total = 0
        self.wrk_rounds: list[dict] = []

    def add(self, result: load.Result) -> None:
        pooled = self.result
        pooled.sent += result.sent
        pooled.errors += result.errors
        pooled.elapsed += result.elapsed
        pooled.latencies += result.latencies
        pooled.ttfts += result.ttfts
        pooled.newline_counts |= result.newline_counts
        pooled.samples = pooled.samples or result.samples
        pooled.first_error = pooled.first_error or result.first_error

    def measurement(self, case: Case, target: Target, compare_lines) -> Measurement:
        has_box = target.box is not None
        if self.wrk_rounds:
            done = sum(outcome["completed"] for outcome in self.wrk_rounds)
            # wrk reports percentiles per run: the median of the rounds'.
            timings = {
                "errors": sum(outcome["non_2xx"] for outcome in self.wrk_rounds),
                "rate": statistics.fmean(outcome["rate"] for outcome in self.wrk_rounds),
                "p50": statistics.median(outcome["p50_ms"] for outcome in self.wrk_rounds),
                "p99": statistics.median(outcome["p99_ms"] for outcome in self.wrk_rounds),
                "ttft_p50": math.nan,
                "ttft_p99": math.nan,
                "newline_counts": [],
                "same_lines_as_direct": None,
            }
        else:
            result = self.result
            done = len(result.latencies)
            timings = {
                "errors": result.errors,
                "rate": result.rate,
                "p50": load.percentile(result.latencies, 0.50) * 1000,
                "p99": load.percentile(result.latencies, 0.99) * 1000,
                "ttft_p50": load.percentile(result.ttfts, 0.50) * 1000,
                "ttft_p99": load.percentile(result.ttfts, 0.99) * 1000,
                "newline_counts": sorted(result.newline_counts),
                "same_lines_as_direct": compare_lines(case, target, result),
                "first_error": result.first_error,
            }
        main, other, simulator = (seconds / max(1, done) * 1e6 for seconds in self.cpu)
        return Measurement(
            case=case.name,
            target=target.label,
            requests=done,
            box_cpu_per_request=main + other if has_box else math.nan,
            box_main_thread_cpu_per_request=main if has_box else math.nan,
            simulator_cpu_per_request=simulator,
            rss_peak=self.rss_peak / 2**20 if has_box else math.nan,
            rss_total=self.rss_total / 2**20 if has_box else math.nan,
            **timings,
        )


class RssSampler:
    """Peak resident memory of a process tree while a load runs, sampled every 100 ms."""

    def __init__(self, server: servers.Server | None):
        self.server = server
        self.peak = 0
        self.peak_total = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        if self.server is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()

    def _sample(self) -> None:
        while True:
            sizes = self.server.rss_bytes()
            self.peak = max(self.peak, *sizes, 0)
            self.peak_total = max(self.peak_total, sum(sizes))
            if self.stopped.wait(0.1):
                return


def normalized(body: bytes) -> list:
    """NDJSON lines or SSE `data:` frames as objects, without clocks and ids."""
    items = []
    for raw in body.split(b"\n"):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(b"data: "):
            line = line[len(b"data: ") :]
            if line == b"[DONE]":
                items.append("[DONE]")
                continue
        try:
            item = json.loads(line)
        except ValueError:
            items.append(line.decode("utf-8", "replace"))
            continue
        if isinstance(item, dict):
            item = {key: value for key, value in item.items() if key not in VOLATILE_FIELDS}
        items.append(item)
    return items


def _progress(section: str, m: Measurement) -> str:
    return (
        f"  {section:8} {m.case:18} {m.target:16} {m.requests:6d} req  p50 {m.p50:8.3f} ms  "
        f"p99 {m.p99:8.3f} ms  {m.rate:8.1f}/s  box {m.box_cpu_per_request:7.1f} µs/req"
        + (f"  errors {m.errors} ({m.first_error})" if m.errors else "")
    )


# --- the report -------------------------------------------------------------------------------


def find(results: list[Measurement], case: str, target: str) -> Measurement | None:
    return next((m for m in results if m.case == case and m.target == target), None)


def _fmt(value: float, digits: int = 3) -> str:
    return (
        "—"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


def case_tables(results: list[Measurement], all_cases: list[Case]) -> str:
    lines = []
    titles = {case.name: case for case in all_cases}
    for case_name in dict.fromkeys(m.case for m in results):
        base = case_name.split(":", 1)[-1]
        case = titles[base]
        title = case.title if base == case_name else f"{case.title} — unpinned, scaling"
        lines.append(f"\n{title}")
        header = (
            f"  {'path':17}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'ttft p50':>10}"
            f"{'+p50 ms':>9}{'+p99 ms':>9}{'+ttft':>8}{'x nginx':>8}{'box µs/req':>11}{'loop':>6}"
            f"{'µs/line':>9}{'rss MB':>8}{'lines':>7}"
        )
        lines.append(header)
        direct = find(results, case_name, "direct")
        nginx = find(results, case_name, "nginx")
        for m in (x for x in results if x.case == case_name):
            added50 = m.p50 - direct.p50 if direct and m.target != "direct" else math.nan
            added99 = m.p99 - direct.p99 if direct and m.target != "direct" else math.nan
            added_ttft = (
                m.ttft_p50 - direct.ttft_p50 if direct and m.target != "direct" else math.nan
            )
            ratio = m.rate / nginx.rate if nginx and nginx.rate else math.nan
            per_line = m.box_cpu_per_request / case.lines if case.lines > 1 else math.nan
            same = {None: "", True: "same", False: "DIFF"}[m.same_lines_as_direct]
            lines.append(
                f"  {m.target:17}{_fmt(m.p50):>9}{_fmt(m.p99):>9}{_fmt(m.rate, 0):>9}"
                f"{_fmt(m.ttft_p50):>10}{_fmt(added50):>9}{_fmt(added99):>9}"
                f"{_fmt(added_ttft):>8}{_fmt(ratio, 2):>8}{_fmt(m.box_cpu_per_request, 0):>11}"
                f"{_fmt(m.box_main_thread_cpu_per_request, 0):>6}"
                f"{_fmt(per_line, 1):>9}{_fmt(m.rss_peak, 0):>8}{same:>7}"
                + (f"  errors: {m.errors} {m.first_error}" if m.errors else "")
            )
    return "\n".join(lines)


def target_table(results: list[Measurement], counts: dict, all_cases: list[Case]) -> str:
    """Each proxy against the targets of issue 7."""
    proxies = [
        label
        for label in dict.fromkeys(m.target for m in results)
        if label not in ("direct", "nginx")
    ]
    lines_per = {case.name: case.lines for case in all_cases}
    rows = []

    def row(name, target_text, values, ok):
        rows.append((name, target_text, values, ok))

    def each(func):
        return {label: func(label) for label in proxies}

    def diff(case, attribute):
        def compute(label):
            m, d = find(results, case, label), find(results, case, "direct")
            return getattr(m, attribute) - getattr(d, attribute) if m and d else math.nan

        return compute

    def ratio(case):
        def compute(label):
            m, n = find(results, case, label), find(results, case, "nginx")
            return m.rate / n.rate if m and n and n.rate else math.nan

        return compute

    def attribute(case, name, scale=1.0):
        def compute(label):
            m = find(results, case, label)
            return getattr(m, name) * scale if m else math.nan

        return compute

    added50 = each(diff("generate-c1", "p50"))
    row("added latency, 1 conn., p50 (ms)", "≤ 0.3", added50, lambda v: v <= 0.3)
    row(
        "added latency, 1 conn., p99 (ms)",
        "≤ 2",
        each(diff("generate-c1", "p99")),
        lambda v: v <= 2,
    )
    row("throughput 16 conn. ÷ nginx", "≥ 0.5", each(ratio("generate-c16")), lambda v: v >= 0.5)
    row("  same, load from wrk", "≥ 0.5", each(ratio("wrk-generate-c16")), lambda v: v >= 0.5)
    row(
        "  same, from CPU per request (one core)",
        "≥ 0.5",
        each(cpu_ratio(results, "generate-c16")),
        lambda v: v >= 0.5,
    )
    row("streamed 100 chunks, 4 conn. ÷ nginx", "≥ 0.9", each(ratio("chat-c4")), lambda v: v >= 0.9)
    row(
        "  same, from CPU per request (one core)",
        "≥ 0.9",
        each(cpu_ratio(results, "chat-c4")),
        lambda v: v >= 0.9,
    )
    row("added TTFT, 1 conn., p50 (ms)", "≤ 1", each(diff("chat-c1", "ttft_p50")), lambda v: v <= 1)
    # Per chunk: what 100 more chunks add, so per-request costs do not count. Wall: the added
    # latency of a 100-chunk stream less that of a one-body reply, over the 100 extra lines.
    row(
        "per chunk, wall, 1 conn. (µs)",
        "≤ 10",
        {
            label: (diff("chat-c1", "p50")(label) - diff("generate-c1", "p50")(label))
            * 1000
            / (lines_per["chat-c1"] - 1)
            for label in proxies
        },
        lambda v: v <= 10,
    )
    row(
        "per chunk, CPU, slow streams (µs)",
        "≤ 10",
        each(lambda label: per_chunk(results, lines_per, label)),
        lambda v: v <= 10,
    )
    row(
        "  of which over nginx's (µs)",
        "",
        each(
            lambda label: (
                per_chunk(results, lines_per, label) - per_chunk(results, lines_per, "nginx")
            )
        ),
        None,
    )
    row(
        "  fixed CPU per stream (µs)",
        "",
        each(lambda label: per_stream(results, lines_per, label)),
        None,
    )
    row(
        "RSS per worker, 100 slow streams (MB)",
        "≤ 150",
        each(attribute("slow-c100", "rss_peak")),
        lambda v: v <= 150,
    )
    row("added latency, 16 conn., p50 (ms)", "", each(diff("generate-c16", "p50")), None)
    row("streamed 100 chunks, 16 conn. ÷ nginx", "", each(ratio("chat-c16")), None)
    row("/v1 streamed, 4 conn. ÷ nginx", "", each(ratio("openai-c4")), None)
    row(
        "scaling: 2 workers ÷ 1, 16 conn. (ours)",
        "> 1",
        {
            label: _scaling(results, "scaling:generate-c16")
            for label in proxies
            if label == "proxy sqlite x2"
        },
        None,
    )
    row(
        "scaling: 2 workers ÷ 1, 16 conn. (wrk)",
        "> 1",
        {
            label: _scaling(results, "scaling:wrk-generate-c16")
            for label in proxies
            if label == "proxy sqlite x2"
        },
        None,
    )
    row(
        "scaling: 2 workers ÷ 1, streamed 16 conn.",
        "> 1",
        {
            label: _scaling(results, "scaling:chat-c16")
            for label in proxies
            if label == "proxy sqlite x2"
        },
        None,
    )

    def recorded_all(label):
        info = counts.get(label)
        return info is not None and all(case["equal"] for case in info["cases"].values())

    width = 17
    out = ["\nAgainst the targets (issue 7); ratios and differences from this run"]
    out.append(f"  {'':42}{'target':>8}" + "".join(f"{label:>{width}}" for label in proxies))
    for name, target_text, values, ok in rows:
        cells = []
        for label in proxies:
            value = values.get(label, math.nan)
            if isinstance(value, float) and math.isnan(value):
                cells.append(f"{'—':>{width}}")
                continue
            mark = "" if ok is None else (" ok" if ok(value) else " MISS")
            cells.append(f"{_fmt(value, 3) + mark:>{width}}")
        out.append(f"  {name:42}{target_text:>8}" + "".join(cells))
    cells = []
    for label in proxies:
        info = counts.get(label)
        if info is None:
            cells.append(f"{'—':>{width}}")
            continue
        text = f"{info['recorded']}/{info['sent']}" + (" ok" if recorded_all(label) else " MISS")
        cells.append(f"{text:>{width}}")
    out.append(f"  {'messages recorded / requests sent':42}{'equal':>8}" + "".join(cells))
    cells = []
    for label in proxies:
        same = [
            m.same_lines_as_direct
            for m in results
            if m.target == label and m.same_lines_as_direct is not None
        ]
        text = "—" if not same else ("same ok" if all(same) else "DIFF MISS")
        cells.append(f"{text:>{width}}")
    out.append(f"  {'stream lines as direct (lost/merged)':42}{'same':>8}" + "".join(cells))
    return "\n".join(out)


def cpu_ratio(results, case: str):
    """Requests/s ÷ nginx's as the CPU costs predict them with the simulator and the box on one
    core: (simulator + nginx) ÷ (simulator + proxy) CPU per request. Unlike the measured rate,
    it does not depend on how the scheduler shares a busy machine between processes."""

    def compute(label: str) -> float:
        m, n = find(results, case, label), find(results, case, "nginx")
        if not m or not n:
            return math.nan
        cost = m.simulator_cpu_per_request + m.box_cpu_per_request
        return (n.simulator_cpu_per_request + n.box_cpu_per_request) / cost

    return compute


def per_chunk(results, lines_per: dict, label: str) -> float:
    """CPU of one more chunk of a slow stream: the slope between the long and short streams."""
    long, short = find(results, "slow-c100", label), find(results, "slow-short-c100", label)
    if not long or not short:
        return math.nan
    extra_lines = lines_per["slow-c100"] - lines_per["slow-short-c100"]
    return (long.box_cpu_per_request - short.box_cpu_per_request) / extra_lines


def per_stream(results, lines_per: dict, label: str) -> float:
    """CPU of a slow stream apart from its chunks: the intercept."""
    short = find(results, "slow-short-c100", label)
    if not short:
        return math.nan
    return (
        short.box_cpu_per_request
        - per_chunk(results, lines_per, label) * lines_per["slow-short-c100"]
    )


def _scaling(results, case) -> float:
    one, two = find(results, case, "proxy sqlite"), find(results, case, "proxy sqlite x2")
    return two.rate / one.rate if one and two and one.rate else math.nan


def record_details(counts: dict) -> str:
    out = ["\nRecords per case (after SIGTERM): sent → recorded"]
    for label, info in counts.items():
        code = info["exit_code"]
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
        ended = "shut down on SIGTERM" if code in (0, -signal.SIGTERM) else f"exit code {code}"
        out.append(f"  {label} ({ended}, spool files {info['spool_files']})")
        for tag, case in info["cases"].items():
            other = ", ".join(f"{status} {n}" for status, n in case["other"].items())
            flag = "" if case["equal"] else "   <-- MISMATCH"
            out.append(
                f"    {tag:28} {case['sent']:7d} → {case['success']:7d} success"
                + (f" ({other})" if other else "")
                + flag
            )
    return "\n".join(out)


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load_average = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"{os.cpu_count()} x {model or platform.processor()}, {memory:.0f} GiB, "
        f"Linux {platform.release()}, Python {platform.python_version()}, "
        f"load average at start {load_average}"
    )


def _variant(text: str) -> tuple[str, dict[str, str]]:
    label, _, settings = text.partition(":")
    pairs = [pair.partition("=") for pair in settings.split(",") if pair]
    if not label or not pairs or any(not name or not sep for name, sep, _ in pairs):
        raise argparse.ArgumentTypeError(f"expected LABEL:NAME=VALUE[,NAME=VALUE], not {text!r}")
    return label, {name: value for name, _, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, no granian, no scaling")
    parser.add_argument("--database", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--no-pin", action="store_true", help="let all processes use all cores")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--also",
        type=_variant,
        action="append",
        default=[],
        metavar="LABEL:NAME=VALUE[,NAME=VALUE]",
        help="one more SQLite proxy, with these settings, measured in the same run (an A/B of"
        " a setting: --also paced:RECORDER_PACE=1)",
    )
    options = parser.parse_args()

    began = time.monotonic()
    bench = Bench(options)
    described = machine()
    print(f"Machine: {described}", file=sys.stderr)
    print(f"Work directory (logs): {bench.workdir}", file=sys.stderr)
    try:
        bench.start()
        bench.run_matrix()
        if not options.quick and not bench.pin:
            bench.notes.append("--no-pin: the scaling section is the same as the main one")
        if not options.quick:
            bench.run_scaling()
        counts = bench.stop_and_count()
    finally:
        bench.close()

    all_cases = cases(options.quick)
    layout = "generator (this process, wrk) on CPU 1, servers on CPU 0" if bench.pin else "unpinned"
    print(f"\nProxy overhead benchmark — {described}")
    print(
        f"Layout: {layout}; {bench.duration:g} s per case and path, in {bench.rounds} interleaved"
        " rounds; times in ms"
    )
    print("box µs/req: CPU of the process between client and simulator (nginx or the proxy,")
    print("all threads and workers, recorder writes included) per request; loop: of which its")
    print("main threads (the event loops; the rest is the recorder's writer thread); µs/line: box")
    print("CPU per NDJSON line or SSE frame. +: added over direct. x nginx: requests/s ÷ nginx's.")
    print(case_tables(bench.results, all_cases))
    print(target_table(bench.results, counts, all_cases))
    print(record_details(counts))
    for note in bench.notes:
        print(f"Note: {note}")
    print(f"\nTotal time: {time.monotonic() - began:.0f} s")
    if options.json:
        options.json.write_text(
            json.dumps(
                {
                    "machine": described,
                    "layout": layout,
                    "duration": bench.duration,
                    "results": [m.__dict__ for m in bench.results],
                    "records": counts,
                },
                indent=1,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
