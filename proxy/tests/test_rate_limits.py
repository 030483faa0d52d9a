"""Rate limits on the model routes, per key or per client IP: requests per minute and tokens per
day, 429 in Ollama's format with Retry-After, shared by workers through Redis."""

import logging
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import ollama
import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from proxy.models import Message, ProxyKey

pytestmark = pytest.mark.django_db(transaction=True)

GENERATE = {"model": "llama3.2", "prompt": "Hi", "stream": False}
# A Redis database of these tests' own on the machine's server, emptied before and after.
REDIS_TEST_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture(autouse=True)
def fresh_counts():
    """Counters are kept in the cache, which outlives a test in this process."""
    cache.clear()
    yield
    cache.clear()


def in_one_window(attempt):
    """Run `attempt` until it ran inside one rate-limit minute (at most twice): a window that
    turns during it resets the counts and proves nothing."""
    for _ in range(2):
        window = int(time.time() // 60)
        result = attempt()
        if int(time.time() // 60) == window:
            return result
    raise AssertionError("two attempts crossed a minute boundary")


def generate(url: str, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{url}/api/generate", json=GENERATE, headers=headers or {}, timeout=30)


@pytest.fixture
def limited(proxy_settings):
    proxy_settings.PROXY_RATE_LIMIT_RPM = 3
    return proxy_settings


def test_a_client_over_its_requests_per_minute_gets_429_with_retry_after(
    limited, start_proxy, simulator
):
    proxy = start_proxy()

    def burst():
        simulator.reset()
        return [generate(proxy.url) for _ in range(5)]

    responses = in_one_window(burst)

    assert [response.status_code for response in responses[:3]] == [200, 200, 200]
    refused = responses[3]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/json; charset=utf-8"
    assert refused.json() == {"error": "rate limited: more than 3 requests per minute"}
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert simulator.stats()["requests"] == 3  # refused before Ollama


def test_the_ollama_client_sees_the_429(limited, start_proxy):
    proxy = start_proxy()
    client = ollama.Client(host=proxy.url)

    def burst():
        with pytest.raises(ollama.ResponseError) as raised:
            for _ in range(4):
                client.generate(model="llama3.2", prompt="Hi")
        return raised.value

    error = in_one_window(burst)

    assert error.status_code == 429
    assert "3 requests per minute" in error.error


def test_only_the_model_routes_are_limited(limited, start_proxy):
    proxy = start_proxy()

    statuses = [httpx.get(f"{proxy.url}/api/tags").status_code for _ in range(10)]

    assert statuses == [200] * 10


def test_each_key_has_its_own_count_apart_from_the_address(limited, start_proxy, django_user_model):
    owner = django_user_model.objects.create_user("alice")
    first = {"Authorization": f"Bearer {ProxyKey.issue(owner, 'one')[1]}"}
    second = {"Authorization": f"Bearer {ProxyKey.issue(owner, 'two')[1]}"}
    proxy = start_proxy()

    def burst():
        return (
            [generate(proxy.url, first).status_code for _ in range(4)],
            [generate(proxy.url, second).status_code for _ in range(3)],
            [generate(proxy.url).status_code for _ in range(3)],
        )

    with_first, with_second, without = in_one_window(burst)

    assert with_first == [200, 200, 200, 429]
    assert with_second == [200, 200, 200]
    assert without == [200, 200, 200]


def test_tokens_per_day_count_what_the_writer_recorded(proxy_settings, start_proxy, simulator):
    proxy_settings.PROXY_RATE_LIMIT_TOKENS_PER_DAY = 50
    proxy = start_proxy()
    tokens = {"X-Sim-Tokens": "30"}

    first = generate(proxy.url, tokens)
    proxy.flush()  # the writer has counted its tokens (prompt + 30 generated)
    second = generate(proxy.url, tokens)
    proxy.flush()
    third = generate(proxy.url, tokens)

    used = sum(message.input_tokens + message.output_tokens for message in Message.objects.all())
    assert (first.status_code, second.status_code) == (200, 200)
    assert used >= 50
    assert third.status_code == 429
    assert third.json() == {"error": "rate limited: 50 tokens per day used up"}
    seconds_to_midnight = 86400 - time.time() % 86400
    assert abs(int(third.headers["retry-after"]) - seconds_to_midnight) <= 2
    assert simulator.stats()["requests"] == 2


def test_an_unavailable_cache_lets_requests_through_and_says_so(
    limited, start_proxy, caplog, unused_port
):
    limited.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{unused_port}/0",
        }
    }
    proxy = start_proxy()

    with caplog.at_level(logging.WARNING, logger="proxy.ratelimit"):
        statuses = [generate(proxy.url).status_code for _ in range(5)]

    assert statuses == [200] * 5
    warnings = [record for record in caplog.records if record.name == "proxy.ratelimit"]
    assert len(warnings) == 1
    assert "not limiting" in warnings[0].getMessage()


@pytest.fixture
def unused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Several workers sharing Redis -------------------------------------------------------------


@pytest.fixture
def test_redis():
    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("no Redis at 127.0.0.1:6379")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def database_url() -> str:
    """The test database as a DATABASE_URL, for servers started in other processes."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    password = f":{params['PASSWORD']}" if params["PASSWORD"] else ""
    return (
        f"postgres://{params['USER']}{password}@{params['HOST'] or '127.0.0.1'}:"
        f"{params['PORT'] or 5432}/{params['NAME']}"
    )


@pytest.fixture
def two_servers(simulator, test_redis, tmp_path, transactional_db, wait_until):
    """Two proxy processes on two ports, sharing Redis as their cache; their URLs."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(tmp_path / "data"),
        "OLLAMA_URL": simulator.url,
        "REDIS_URL": REDIS_TEST_URL,
        "PROXY_RATE_LIMIT_RPM": "4",
        "SECRET_KEY": "test",
        "LOG_LEVEL": "WARNING",
    }
    servers, urls = [], []
    try:
        for _ in range(2):
            with socket.socket() as listener:
                listener.bind(("127.0.0.1", 0))
                listener.listen(128)
                servers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "uvicorn",
                            "ollama_monitor.asgi:application",
                            "--fd",
                            str(listener.fileno()),
                            "--log-level",
                            "warning",
                            "--no-access-log",
                        ],
                        cwd=settings.BASE_DIR,
                        env=env,
                        pass_fds=[listener.fileno()],
                    )
                )
                urls.append(f"http://127.0.0.1:{listener.getsockname()[1]}")
        for url in urls:
            wait_until(lambda url=url: _answers(url), timeout=30)
        yield urls
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


def _answers(url: str) -> bool:
    """The server is up."""
    try:
        return httpx.get(f"{url}/", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_workers_sharing_redis_share_one_count(two_servers, simulator):
    def burst():
        simulator.reset()
        # Alternating between the two processes: each sees only half of the requests.
        return [generate(two_servers[number % 2]).status_code for number in range(6)]

    statuses = in_one_window(burst)

    assert statuses == [200, 200, 200, 200, 429, 429]
    assert simulator.stats()["requests"] == 4
