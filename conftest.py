"""Fixtures shared by every test: the simulated Ollama and the proxy, both on real loopback HTTP."""

import os
import shutil
import threading

import httpx
import pytest
from django.contrib.auth.models import Permission

from proxy.serving import ThreadedServer
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

    def start() -> ThreadedServer:
        started.append(ThreadedServer().start())
        return started[-1]

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def proxy(start_proxy):
    """The proxy in front of the simulator, recording into the test database."""
    return start_proxy()


# force_login would pick the first auth backend, the login throttle, which finds no user.
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


@pytest.fixture
def reader(client, django_user_model):
    """Log the test's client in as a new staff user with these permissions (codenames, e.g.
    "view_message") and return the client: `reader("auditor", "view_message",
    "view_message_content").get("/dashboard/")`."""

    def log_in(name, *codenames):
        user = django_user_model.objects.create_user(name, is_staff=True)
        for codename in codenames:
            user.user_permissions.add(Permission.objects.get(codename=codename))
        client.force_login(user, backend=MODEL_BACKEND)
        return client

    return log_in


@pytest.fixture
def exports(django_user_model):
    """`exports(url)`: what `/analytics/export` of the server at `url` gives an auditor (a
    user who may read content), as text per format (csv, json, jsonl); each answered 200."""
    from analytics.models import ApiToken

    def export_all(url: str) -> dict[str, str]:
        auditor = django_user_model.objects.create_user("export-auditor")
        for codename in ("view_message", "view_message_content"):
            auditor.user_permissions.add(Permission.objects.get(codename=codename))
        _, token = ApiToken.issue(auditor, "export")
        texts = {}
        for export_format in ("csv", "json", "jsonl"):
            exported = httpx.get(
                f"{url}/analytics/export",
                params={"format": export_format},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert exported.status_code == 200
            texts[export_format] = exported.text
        return texts

    return export_all


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
                raise AssertionError(
                    f"not true within {timeout} s: {predicate.__doc__ or predicate}"
                )
    finally:
        timer.cancel()
