"""Conversations in the API (/analytics/conversations), the dashboard and the admin: chats sent
through the running application with the official client, read back as threads."""

from datetime import timedelta

import httpx
import ollama
import pytest

from analytics.tests.conftest import client_for, make_user
from proxy import conversations
from proxy.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE = '<script>alert("x")</script>'


@pytest.fixture(autouse=True)
def forget_anchors():
    conversations.forget()
    yield
    conversations.forget()


def chat(server, questions: list[str], **client_options) -> list[dict]:
    client = ollama.Client(host=server.url, **client_options)
    history = []
    for question in questions:
        history.append({"role": "user", "content": question})
        reply = client.chat(model="llama3.2", messages=history)
        history.append({"role": "assistant", "content": reply.message.content})
    return history


@pytest.fixture
def two_chats(server):
    """A chat about the sky in three turns, and one about tea in one; returns the first."""
    sky = chat(server, ["Why is the sky blue?", "And at sunset?", f"Say {HOSTILE}"])
    chat(server, ["How do I brew green tea?"])
    server.flush()
    return sky


def test_the_api_lists_conversations_and_shows_one_as_a_thread(server, api, two_chats):
    listed = api.get("/conversations").json()["conversations"]
    assert [row["turns"] for row in listed] == [1, 3]  # latest activity first
    sky = listed[1]
    assert sky["input_tokens"] == sum(
        Message.objects.filter(conversation_id=sky["id"]).values_list("input_tokens", flat=True)
    )

    thread = api.get(f"/conversations/{sky['id']}").json()
    assert [turn["history_turns"] for turn in thread["thread"]] == [0, 2, 4]
    assert [turn["new_turns"] for turn in thread["thread"]] == [
        [two_chats[index]] for index in (0, 2, 4)
    ]
    last = api.get(f"/messages/{thread['thread'][-1]['id']}").json()
    assert last["messages"] == two_chats[:5]  # the whole history, as the client sent it
    assert (last["conversation"], last["history_missing"]) == (sky["id"], 0)


def test_the_message_filters_choose_the_conversations(api, two_chats):
    def turns(**filters):
        page = api.get("/conversations", params=filters).json()["conversations"]
        return [row["turns"] for row in page]

    assert turns(search="sunset") == [3]  # a word of one turn finds the whole conversation
    assert turns(search="green tea") == [1]
    assert turns(model="llama3.2", status="success") == [1, 3]
    assert turns(model="mistral") == []
    assert api.get("/conversations", params={"status": "nonsense"}).status_code == 422


def test_without_the_content_permission_a_thread_has_no_text(server, django_user_model, two_chats):
    reader = make_user(django_user_model, "reader", "view_message")
    with client_for(server, reader) as api:
        conversation = Conversation.objects.get(turns=3)
        thread = api.get(f"/conversations/{conversation.pk}").json()["thread"]
        assert {turn["prompt"] for turn in thread} == {None}
        assert {str(turn["new_turns"]) for turn in thread} == {"None"}
        assert api.get(f"/messages/{thread[-1]['id']}").json()["messages"] is None


def test_the_conversations_api_needs_the_read_permission(server, django_user_model, two_chats):
    nobody = make_user(django_user_model, "nobody")
    with client_for(server, nobody) as api:
        assert api.get("/conversations").status_code == 403
    with client_for(server, make_user(django_user_model, "reader", "view_message")) as api:
        assert api.get("/conversations/999999").status_code == 404
    assert httpx.get(f"{server.url}/analytics/conversations").status_code == 401


def test_the_dashboard_lists_conversations_and_shows_a_thread(reader, two_chats):
    client = reader("staff", "view_message", "view_message_content")
    listing = client.get("/dashboard/conversations/", {"search": "sunset"}).content.decode()
    sky = Conversation.objects.get(turns=3)
    assert f'href="/dashboard/conversations/{sky.pk}/"' in listing
    assert f"/dashboard/conversations/{Conversation.objects.get(turns=1).pk}/" not in listing

    page = client.get(f"/dashboard/conversations/{sky.pk}/").content.decode()
    assert page.count('class="thread-turn') == 3
    assert "And at sunset?" in page
    assert "continues 4 earlier turns" in page
    assert HOSTILE not in page and "&lt;script&gt;" in page
    assert 'href="/dashboard/conversations/"' in client.get("/dashboard/").content.decode()


def test_the_dashboard_thread_hides_text_without_the_content_permission(reader, two_chats):
    client = reader("staff", "view_message")
    page = client.get(f"/dashboard/conversations/{Conversation.objects.get(turns=3).pk}/")
    assert page.status_code == 200
    assert "And at sunset?" not in page.content.decode()
    assert "needs the permission" in page.content.decode()


def test_the_dashboard_pages_need_the_read_permission(reader, two_chats):
    client = reader("staff")
    assert client.get("/dashboard/conversations/").status_code == 403
    pk = Conversation.objects.first().pk
    assert client.get(f"/dashboard/conversations/{pk}/").status_code == 403


def test_the_admin_shows_conversations_and_links_a_message_to_its_conversation(reader, two_chats):
    client = reader("staff", "view_message", "view_message_content", "view_conversation")
    sky = Conversation.objects.get(turns=3)
    assert "on the dashboard" in client.get("/admin/proxy/conversation/").content.decode()
    detail = client.get(f"/admin/proxy/conversation/{sky.pk}/change/").content.decode()
    assert detail.count("/admin/proxy/message/") >= 3

    last = sky.messages.latest("timestamp")
    message = client.get(f"/admin/proxy/message/{last.pk}/change/").content.decode()
    assert f'href="/admin/proxy/conversation/{sky.pk}/change/"' in message
    assert "Why is the sky blue?" in message  # the whole history, rebuilt


def test_the_dashboard_list_takes_the_dashboard_s_time_ranges(reader, two_chats):
    """By default the last 24 hours, as on the dashboard; `range` and custom times choose."""
    client = reader("analyst", "view_message")
    sky = Conversation.objects.get(turns=3)
    three_days_ago = sky.last_at - timedelta(days=3)
    Message.objects.filter(conversation=sky).update(timestamp=three_days_ago)
    Conversation.objects.filter(pk=sky.pk).update(started_at=three_days_ago, last_at=three_days_ago)
    link = f'href="/dashboard/conversations/{sky.pk}/"'

    def listing(**params) -> str:
        return client.get("/dashboard/conversations/", params).content.decode()

    assert link not in listing()
    assert link not in listing(range="24h")
    assert link in listing(range="7d")
    assert link in listing(range="all")
    custom = {"start_time": (three_days_ago - timedelta(hours=1)).isoformat()}
    assert link in listing(range="custom", **custom)
    assert link not in listing(range="24h", **custom)  # a relative range ignores custom times
    assert '<option value="7d" selected>' in listing(range="7d")
