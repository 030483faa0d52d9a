"""When Ollama fails, is away or is too slow: clear errors in Ollama's format, and a record."""

import socket
import time

import httpx
import ollama
import pytest

from proxy.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def proxy_without_ollama(proxy_settings, start_proxy):
    proxy_settings.OLLAMA_URL = f"http://127.0.0.1:{closed_port()}"
    return start_proxy()


def test_it_answers_502_at_once_when_ollama_is_unreachable(proxy_without_ollama, settings):
    started = time.monotonic()
    with pytest.raises(ollama.ResponseError) as raised:
        ollama.Client(host=proxy_without_ollama.url).generate(model="llama3.2", prompt="Hi")
    elapsed = time.monotonic() - started

    assert raised.value.status_code == 502
    assert raised.value.error.startswith(f"could not connect to Ollama at {settings.OLLAMA_URL}")
    assert elapsed < settings.PROXY_CONNECT_TIMEOUT
    proxy_without_ollama.flush()
    message = Message.objects.get()
    assert (message.status, message.http_status) == ("error", 502)
    assert message.error == raised.value.error


def test_it_answers_ollama_routes_it_does_not_record_with_502_too(proxy_without_ollama):
    response = httpx.get(f"{proxy_without_ollama.url}/api/tags")

    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert "could not connect to Ollama" in response.json()["error"]


def test_it_relays_an_error_line_in_the_middle_of_a_stream_and_records_an_error(proxy):
    client = ollama.Client(host=proxy.url, headers={"X-Sim-Fail": "midstream"})
    received = []
    with pytest.raises(ollama.ResponseError) as raised:
        for part in client.chat(
            model="llama3.2", messages=[{"role": "user", "content": "Hi"}], stream=True
        ):
            received.append(part.message.content)

    assert received
    proxy.flush()
    message = Message.objects.get()
    assert (message.status, message.http_status) == ("error", 200)
    assert message.error == raised.value.error
    assert message.response == "".join(received)


def test_it_relays_an_upstream_500_unchanged(proxy):
    response = httpx.post(
        f"{proxy.url}/api/generate",
        json={"model": "llama3.2", "prompt": "Hi"},
        headers={"X-Sim-Fail": "500"},
    )

    assert response.status_code == 500
    assert response.json() == {"error": "llama runner process has terminated: exit status 2"}
    proxy.flush()
    assert Message.objects.get().error == "llama runner process has terminated: exit status 2"


def test_it_gives_up_on_an_upstream_silent_for_longer_than_the_idle_timeout(
    proxy_settings, start_proxy
):
    proxy_settings.PROXY_IDLE_TIMEOUT = 0.3
    running = start_proxy()

    response = httpx.post(
        f"{running.url}/api/generate",
        json={"model": "llama3.2", "prompt": "Hi"},
        headers={"X-Sim-TTFT": "10"},
    )

    running.flush()
    assert response.status_code == 504
    assert "sent nothing for 0.3 s" in response.json()["error"]
    assert Message.objects.get().status == "error"


def test_it_refuses_a_body_over_the_limit_in_ollamas_error_format(proxy, settings):
    settings.PROXY_MAX_BODY_BYTES = 1000

    response = httpx.post(
        f"{proxy.url}/api/chat", content=b'{"model":"llama3.2","prompt":"' + b"x" * 2000 + b'"}'
    )

    assert response.status_code == 413
    assert response.json()["error"].startswith("request body too large")
    assert "PROXY_MAX_BODY_BYTES" in response.json()["error"]
