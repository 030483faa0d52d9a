"""Fixtures shared by every test: the simulated Ollama and the proxy, both on real loopback HTTP."""

import asyncio
import os
import shutil
import socket
import threading

import pytest
import uvicorn

from proxy.simulator import RunningSimulator


def pytest_collection_modifyitems(config, items):
    """A test that needs a missing program skips on a user's machine, but runs (and fails) in CI."""
    if os.environ.get("CI") == "true":
        return
    for item in items:
        marker = item.get_closest_marker("needs_binary")
        if marker and not shutil.which(marker.args[0]):
            item.add_marker(pytest.mark.skip(reason=f"{marker.args[0]} is not installed"))


@pytest.fixture
def simulator():
    """A simulated Ollama on a free loopback port, paced fast so tests stay quick."""
    with RunningSimulator(port=0, tokens_per_second=0, ttft=0) as sim:
        yield sim


class RunningProxy:
    """The real ASGI application served by uvicorn in a thread, as users run it."""

    def __init__(self):
        from ollama_monitor.asgi import application, forwarder

        self.forwarder = forwarder
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            application,
            lifespan="on",
            log_level="warning",
            http="httptools",
            loop="asyncio",
            server_header=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def start(self):
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the proxy did not start")
            threading.Event().wait(0.005)
        return self

    def run(self, coroutine, timeout=30):
        """Run a coroutine on the proxy's event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.forwarder.loop).result(timeout)

    def flush(self):
        """Wait until everything the proxy handed to its recorder is written or spooled."""
        self.run(self.forwarder.recorder.flushed())

    def stop(self):
        """Shut down as on SIGTERM: finish the open requests, then flush the recorder."""
        if self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(timeout=60)
        self.socket.close()


@pytest.fixture
def proxy_settings(settings, simulator, tmp_path):
    settings.OLLAMA_URL = simulator.url
    settings.RECORDER_SPOOL_DIR = tmp_path / "spool"
    settings.RECORDER_RETRY_SECONDS = 0.2
    return settings


@pytest.fixture
def start_proxy(proxy_settings, transactional_db):
    """Start proxies with the settings of the moment; each is stopped after the test."""
    started = []

    def start() -> RunningProxy:
        started.append(RunningProxy().start())
        return started[-1]

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def proxy(start_proxy):
    """The proxy in front of the simulator, recording into the test database."""
    return start_proxy()


@pytest.fixture
def wait_until():
    return _wait_until


def _wait_until(predicate, timeout=10.0, interval=0.02):
    """Poll a condition the test cannot be notified of (rows appearing in the database)."""
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not predicate():
            if deadline.wait(interval):
                raise AssertionError(f"not true within {timeout} s: {predicate.__doc__ or predicate}")
    finally:
        timer.cancel()
