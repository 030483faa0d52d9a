"""The processes of the proxy benchmark: the simulated Ollama, nginx, the proxy, and wrk.

Each server runs as its own process tree on loopback, started the way a user starts it, and is
watched through /proc: CPU time (utime + stime, all threads and child processes) and resident
memory. CPU affinity is set per thread, so a server can be moved between cores mid-run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").is_dir() else sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Variables of the caller that would point a proxy elsewhere than where the benchmark says.
PROXY_VARIABLES = (
    "DATABASE_URL",
    "DATA_DIR",
    "OLLAMA_URL",
    "RECORDER_SPOOL_DIR",
    "PROMETHEUS_MULTIPROC_DIR",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pinned(command: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *command] if cpus else command


class Server:
    """A started process tree with a base URL."""

    def __init__(self, name: str, command: list[str], port: int, log: Path, env=None, cwd=ROOT):
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = 60.0) -> Server:
        """Poll `GET /` until it answers 200 ("Ollama is running", relayed or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log.read_text()[-3000:]}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(self.url + "/", timeout=2) as response,
            ):
                if response.status == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name} did not answer within {timeout} s:\n{self.log.read_text()}"
        )

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def cpu_seconds(self) -> float:
        return sum(_cpu_ticks(pid) for pid in self.pids()) / CLOCK_TICKS

    def cpu_seconds_split(self) -> tuple[float, float]:
        """CPU of the main threads (the event loops) and of all other threads (the recorder's
        writer, granian's runtime threads), over the whole tree."""
        main = other = 0
        for pid in self.pids():
            for task in Path(f"/proc/{pid}/task").glob("*"):
                ticks = _cpu_ticks(pid, int(task.name))
                if int(task.name) == pid:
                    main += ticks
                else:
                    other += ticks
        return main / CLOCK_TICKS, other / CLOCK_TICKS

    def rss_bytes(self) -> list[int]:
        """Resident memory of each process of the tree (a master and its workers)."""
        return [_rss(pid) for pid in self.pids()]

    def set_affinity(self, cpus: set[int]) -> None:
        for pid in self.pids():
            for task in Path(f"/proc/{pid}/task").glob("*"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), cpus)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 90.0) -> int | None:
        """Stop gracefully (the proxy finishes its requests and flushes its recorder)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return tree


def _cpu_ticks(pid: int, tid: int | None = None) -> int:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except OSError:
        return 0


def start_simulator(workdir: Path, cpus: str | None) -> Server:
    port = free_port()
    command = [PYTHON, "-m", "proxy.simulator", "--port", str(port)]
    command += ["--tokens-per-second", "0", "--ttft", "0"]
    return Server("simulator", pinned(command, cpus), port, workdir / "simulator.log").wait_ready()


NGINX_CONFIG = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy_temp;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    scgi_temp_path {tmp}/scgi_temp;
{http}
}}
"""
# The baseline: a plain reverse proxy, configured the way one is put in front of Ollama.
PROXY_PASS = """\
    upstream ollama {{
        server 127.0.0.1:{upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 100m;
        location / {{
            proxy_pass http://ollama;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}"""


def nginx_binary() -> str | None:
    sbin = Path("/usr/sbin/nginx")
    return shutil.which("nginx") or (str(sbin) if sbin.exists() else None)


def start_nginx(workdir: Path, upstream_port: int, cpus: str | None) -> Server | None:
    """nginx proxying to the upstream port (the baseline), or None without nginx."""
    if nginx_binary() is None:
        return None
    return run_nginx(workdir, "nginx", PROXY_PASS, cpus, upstream=upstream_port)


def run_nginx(workdir: Path, name: str, http: str, cpus: str | None, **fields) -> Server:
    """One nginx worker with its files under workdir/name; `http` is the inside of its `http`
    block, formatted with `port` (a free one) and `fields`."""
    tmp = workdir / name
    tmp.mkdir()
    port = free_port()
    config = tmp / "nginx.conf"
    config.write_text(NGINX_CONFIG.format(tmp=tmp, http=http.format(port=port, **fields)))
    command = [nginx_binary(), "-p", str(tmp), "-e", str(tmp / "nginx-error.log")]
    command += ["-c", str(config)]
    return Server(name, pinned(command, cpus), port, workdir / f"{name}.log").wait_ready()


def proxy_environment(
    upstream: str, data_dir: Path, database_url: str | None, workers: int = 1
) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in PROXY_VARIABLES}
    env.update(
        OLLAMA_URL=upstream,
        DATA_DIR=str(data_dir),
        # Each request carries the name of its benchmark case; recorded as the message's user,
        # it lets the records be counted per case.
        PROXY_USER_HEADERS="X-Bench-Case",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    if workers > 1:
        # As `make run` does for several workers: their metrics pooled in one folder.
        env["PROMETHEUS_MULTIPROC_DIR"] = str(data_dir / "prometheus-multiproc")
        (data_dir / "prometheus-multiproc").mkdir(parents=True)
    return env


def migrate(env: dict[str, str], log: Path) -> None:
    with open(log, "ab") as output:
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--no-input"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            check=True,
        )


def start_proxy(
    name: str, env: dict[str, str], log: Path, *, server: str, workers: int, cpus: str | None
) -> Server:
    """The proxy as users run it (the README's command), under uvicorn or granian."""
    port = free_port()
    app = "ollama_monitor.asgi:application"
    if server == "uvicorn":
        command = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
        command += ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
        command += ["--no-server-header", "--log-level", "warning"]
        command += ["--timeout-graceful-shutdown", "30"]
        if workers > 1:
            command += ["--workers", str(workers)]
    elif server == "granian":
        command = [str(Path(PYTHON).parent / "granian"), "--interface", "asgi", "--loop", "uvloop"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--no-ws"]
        command += ["--log-level", "warning", "--workers", str(workers), app]
    else:
        raise ValueError(server)
    return Server(name, pinned(command, cpus), port, log, env=env).wait_ready()


def granian_available() -> bool:
    return (Path(PYTHON).parent / "granian").exists()


def run_wrk(
    url: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    connections: int,
    duration: float,
    workdir: Path,
    cpus: str | None,
) -> dict | None:
    """wrk's request rate and completed-request count for one POST, or None without wrk."""
    if shutil.which("wrk") is None:
        return None
    script = workdir / "wrk-post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body.decode())}"]
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    command += ["-s", str(script), url + path]
    output = subprocess.run(
        pinned(command, cpus), capture_output=True, text=True, check=True
    ).stdout
    completed = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "completed": int(completed.group(1)) if completed else 0,
        "rate": float(rate.group(1)) if rate else 0.0,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "p50_ms": _wrk_latency(output, "50%"),
        "p99_ms": _wrk_latency(output, "99%"),
    }


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wrk_latency(output: str, label: str) -> float:
    match = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
