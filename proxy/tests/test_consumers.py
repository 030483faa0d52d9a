"""The live feed at /ws/messages/: who may listen, what they see, and a message recorded through
the real proxy arriving on the socket. Against the real application under uvicorn on loopback,
with a real WebSocket client."""

import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from proxy import consumers

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def session_cookie(reader):
    """The session cookie of a logged-in user with these `proxy` permissions."""

    def cookie(name, *codenames) -> str:
        return f"sessionid={reader(name, *codenames).cookies['sessionid'].value}"

    return cookie


def row(**overrides) -> dict:
    """A row as the writer inserts it."""
    return {
        "request_id": uuid.uuid4(),
        "timestamp": datetime(2026, 3, 2, 12, 0, tzinfo=UTC),
        "endpoint": "/api/chat",
        "model": "llama3.2",
        "stream": True,
        "status": "success",
        "http_status": 200,
        "user": "alice",
        "client_ip": "127.0.0.1",
        "prompt": "Why is the sky blue?",
        "response": "Rayleigh scattering.",
        "input_tokens": 20,
        "output_tokens": 40,
        "latency_seconds": 1.2,
        "ttft_seconds": 0.2,
        "tokens_per_second": 40.0,
        "cost_usd": None,
        "category": "chat",
        "error": "",
        **overrides,
    }


def listen(server, cookie: str | None, rows: list[dict], origin: str | None = "server"):
    """Connect to the live feed of the real server; when accepted, publish `rows` from this
    thread as the writer does and return what the socket received (None when refused)."""
    headers = {}
    if origin:
        headers["Origin"] = server.url if origin == "server" else origin
    if cookie:
        headers["Cookie"] = cookie
    url = server.url.replace("http://", "ws://") + "/ws/messages/"
    try:
        socket = connect(url, additional_headers=headers)
    except InvalidStatus as refused:
        assert refused.response.status_code == 403
        return None
    with socket:
        consumers.publish(rows, server.forwarder.loop)
        return [json.loads(socket.recv(timeout=10)) for _ in rows]


def test_anonymous_visitors_are_refused(proxy):
    assert listen(proxy, None, [row()]) is None


def test_a_user_without_the_read_permission_is_refused(proxy, session_cookie):
    assert listen(proxy, session_cookie("nobody"), [row()]) is None


def test_a_page_of_another_site_is_refused(proxy, session_cookie):
    cookie = session_cookie("analyst", "view_message")
    assert listen(proxy, cookie, [row()], origin="http://evil.example") is None
    assert listen(proxy, cookie, [row()], origin=None) is None


def test_an_analyst_gets_new_messages_without_their_text(proxy, session_cookie):
    cookie = session_cookie("analyst", "view_message")
    sent = row(prompt="a private question", error="")
    [received] = listen(proxy, cookie, [sent])
    assert received["type"] == "message"
    message = received["message"]
    assert message["id"] == sent["request_id"].hex
    assert message["model"] == "llama3.2"
    assert message["latency"] == 1.2
    assert message["prompt"] is None and message["response"] is None and message["error"] is None


def test_an_auditor_gets_the_text_in_the_api_shape(proxy, session_cookie):
    cookie = session_cookie("auditor", "view_message", "view_message_content")
    sent = row(prompt=HOSTILE)
    [received] = listen(proxy, cookie, [sent])
    message = received["message"]
    assert list(message) == list(consumers.Message.JSON_FIELDS)
    assert message["prompt"] == HOSTILE  # data, never markup: the page sets it as text
    assert message["timestamp"] == "2026-03-02T12:00:00Z"


def test_long_text_is_cut_in_the_feed(proxy, session_cookie):
    cookie = session_cookie("auditor", "view_message", "view_message_content")
    [received] = listen(proxy, cookie, [row(prompt="x" * 10_000)])
    assert len(received["message"]["prompt"]) == consumers.FEED_TEXT_CHARS + 1


def test_publishing_without_a_running_loop_does_nothing():
    consumers.publish([row()], None)  # a writer before the server started: no error


def test_no_event_is_built_while_nobody_listens(proxy, session_cookie, monkeypatch):
    """With the in-memory layer the writer skips the feed when no socket is open, and builds
    it again as soon as one is."""
    built = []
    feed_json = consumers.feed_json
    monkeypatch.setattr(consumers, "feed_json", lambda row: built.append(row) or feed_json(row))
    consumers.publish([row()], proxy.forwarder.loop)
    assert built == []
    assert listen(proxy, session_cookie("analyst", "view_message"), [row()]) is not None
    assert len(built) == 1


def test_a_message_recorded_through_the_proxy_arrives_on_the_socket(proxy, session_cookie):
    cookie = session_cookie("auditor", "view_message", "view_message_content")
    url = proxy.url.replace("http://", "ws://") + "/ws/messages/"
    with connect(url, additional_headers={"Cookie": cookie, "Origin": proxy.url}) as socket:
        response = httpx.post(
            f"{proxy.url}/api/generate",
            json={"model": "llama3.2", "prompt": "live feed check", "stream": False},
            timeout=30,
        )
        assert response.status_code == 200
        received = json.loads(socket.recv(timeout=10))
    message = received["message"]
    assert message["endpoint"] == "/api/generate"
    assert message["prompt"] == "live feed check"
    assert message["status"] == "success"
    assert message["output_tokens"] > 0


def _open_feed(server, cookie: str):
    url = server.url.replace("http://", "ws://") + "/ws/messages/"
    return connect(url, additional_headers={"Origin": server.url, "Cookie": cookie})


def _closed_with(socket) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=10)
    return closed.value.rcvd.code if closed.value.rcvd else None


@pytest.mark.parametrize("withdraw", ["permission", "logout", "deactivate"])
def test_an_open_socket_closes_once_its_reader_may_no_longer_read(
    proxy, django_user_model, session_cookie, monkeypatch, withdraw
):
    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.0)
    cookie = session_cookie("analyst", "view_message")
    user = django_user_model.objects.get(username="analyst")
    with _open_feed(proxy, cookie) as socket:
        consumers.publish([row()], proxy.forwarder.loop)
        assert json.loads(socket.recv(timeout=10))["type"] == "message"
        if withdraw == "permission":
            user.user_permissions.clear()
        elif withdraw == "logout":
            Session.objects.all().delete()
        else:
            django_user_model.objects.filter(pk=user.pk).update(is_active=False)
        consumers.publish([row()], proxy.forwarder.loop)
        assert _closed_with(socket) == consumers.CLOSE_FORBIDDEN


def test_a_withdrawn_content_permission_hides_the_text_on_an_open_socket(
    proxy, django_user_model, session_cookie, monkeypatch
):
    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.0)
    cookie = session_cookie("auditor", "view_message", "view_message_content")
    user = django_user_model.objects.get(username="auditor")
    with _open_feed(proxy, cookie) as socket:
        consumers.publish([row(prompt="first")], proxy.forwarder.loop)
        assert json.loads(socket.recv(timeout=10))["message"]["prompt"] == "first"
        user.user_permissions.remove(Permission.objects.get(codename="view_message_content"))
        consumers.publish([row(prompt="second")], proxy.forwarder.loop)
        assert json.loads(socket.recv(timeout=10))["message"]["prompt"] is None
