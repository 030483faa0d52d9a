"""The message admin: a read-only microscope that shows text only to those allowed to read it."""

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from analytics.admin import BoundedCountPaginator
from analytics.tests.conftest import message_fields
from proxy import rollups
from proxy.models import Message

pytestmark = pytest.mark.django_db

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)><b>bold</b>'


def write(**overrides) -> Message:
    """A message written as the recorder's writer writes one: the row and its rollups."""
    row = message_fields(
        load_duration_seconds=0.1,
        prompt_eval_duration_seconds=0.1,
        eval_duration_seconds=0.9,
        total_duration_seconds=1.1,
        **overrides,
    )
    with transaction.atomic():
        Message.objects.bulk_create([Message(**row)])
        rollups.add([row])
    return Message.objects.get(request_id=row["request_id"])


def read(response) -> str:
    """A streamed export's body (an async iterator: under ASGI, Django streams it as is)."""

    async def chunks():
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(chunks)().decode()


@pytest.fixture
def analyst(reader):
    """May see metadata, not prompts and responses."""
    return reader("analyst", "view_message")


@pytest.fixture
def auditor(reader):
    return reader("auditor", "view_message", "view_message_content")


@pytest.fixture
def conversation_message():
    return write(
        prompt="[system]\nBe brief.\n\n[user]\nWhat is in this picture?",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is in this picture?", "images": 2},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "lookup", "arguments": {"q": "cat"}}}],
            },
            {"role": "tool", "content": "a cat", "tool_name": "lookup"},
        ],
        response="A cat on a sofa.",
        thinking="The user wants a description.",
        tool_calls=[{"function": {"name": "describe_image", "arguments": {}}}],
    )


def test_anonymous_visitors_are_sent_to_the_login_page(client):
    message = write()
    for url in ("/admin/proxy/message/", f"/admin/proxy/message/{message.pk}/change/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_an_analyst_sees_the_list_with_prompts_masked(analyst):
    write(prompt="my secret diagnosis")
    page = analyst.get("/admin/proxy/message/").content.decode()
    assert "llama3.2" in page
    assert "20 → 40" in page
    assert "secret diagnosis" not in page
    assert "hidden: needs the permission to view message content" in page


def test_an_auditor_sees_prompt_excerpts(auditor):
    write(prompt="Why is the sky blue? " + "word " * 100)
    page = auditor.get("/admin/proxy/message/").content.decode()
    assert "Why is the sky blue? word word" in page
    assert "…" in page


def test_an_analyst_sees_the_detail_page_without_any_text(analyst, conversation_message):
    page = analyst.get(f"/admin/proxy/message/{conversation_message.pk}/change/").content.decode()
    assert conversation_message.request_id.hex in page
    assert "Timings" in page
    for secret in ("Be brief", "picture", "A cat on a sofa", "wants a description", "lookup"):
        assert secret not in page


def test_an_auditor_reads_the_prompt_as_a_conversation_and_the_whole_response(
    auditor, conversation_message
):
    page = auditor.get(f"/admin/proxy/message/{conversation_message.pk}/change/").content.decode()
    assert 'class="turn role-system"' in page
    assert 'class="turn role-user"' in page
    assert "2 images attached" in page
    assert "lookup" in page  # the assistant's tool call and the tool's answer
    assert "A cat on a sofa." in page
    assert "The user wants a description." in page
    assert "describe_image" in page
    # The timings breakdown: load, prompt evaluation, generation and the rest.
    for label in ("Model load", "Prompt evaluation", "Generation", "Total at the proxy"):
        assert label in page
    assert "?user=alice" in page and "?model=llama3.2" in page


@pytest.mark.parametrize("where", ["list", "detail"])
def test_html_in_a_recorded_prompt_is_shown_as_text(auditor, where):
    message = write(
        prompt=HOSTILE, response=HOSTILE, messages=[{"role": "user", "content": HOSTILE}]
    )
    url = (
        "/admin/proxy/message/" if where == "list" else f"/admin/proxy/message/{message.pk}/change/"
    )
    page = auditor.get(url).content.decode()
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_messages_cannot_be_added_or_changed(auditor):
    message = write()
    assert auditor.get("/admin/proxy/message/add/").status_code == 403
    response = auditor.post(f"/admin/proxy/message/{message.pk}/change/", {"model": "other"})
    assert response.status_code in (200, 403)
    message.refresh_from_db()
    assert message.model == "llama3.2"


def test_search_goes_through_the_full_text_index_not_like(auditor):
    write(prompt="How do tides work?")
    write(prompt="Explain photosynthesis")
    with CaptureQueriesContext(connection) as queries:
        page = auditor.get("/admin/proxy/message/", {"q": "photosynthesis"}).content.decode()
    assert "Explain photosynthesis" in page
    assert "tides" not in page
    sql = " ".join(query["sql"] for query in queries.captured_queries)
    assert " LIKE " not in sql.upper()
    assert "proxy_message_fts" in sql or "search_vector" in sql


def test_a_request_id_finds_its_message(auditor):
    wanted = write(prompt="the wanted one")
    write(prompt="another one")
    page = auditor.get("/admin/proxy/message/", {"q": wanted.request_id.hex}).content.decode()
    assert "the wanted one" in page
    assert "another one" not in page


def test_the_filters_narrow_the_list(auditor):
    write(model="llama3.2", prompt="fast llama", latency_seconds=0.5)
    write(model="qwen3", prompt="slow qwen", latency_seconds=12.0, user="bob")
    write(model="qwen3", prompt="short qwen", latency_seconds=0.3, input_tokens=5000)

    def shown(**query):
        page = auditor.get("/admin/proxy/message/", query).content.decode()
        return {text for text in ("fast llama", "slow qwen", "short qwen") if text in page}

    assert shown(model="qwen3") == {"slow qwen", "short qwen"}
    assert shown(latency="5-30") == {"slow qwen"}
    assert shown(user="bob") == {"slow qwen"}
    assert shown(input_tokens="1000-10000") == {"short qwen"}
    assert shown(model="qwen3", latency="-1") == {"short qwen"}
    page = auditor.get("/admin/proxy/message/").content.decode()
    assert "?model=qwen3" in page  # the sidebar offers the models the rollups know


def test_the_list_takes_as_many_queries_for_fifty_messages_as_for_one(
    auditor, django_assert_max_num_queries
):
    write()
    with CaptureQueriesContext(connection) as one:
        auditor.get("/admin/proxy/message/")
    for number in range(49):
        write(user=f"user{number}", model=f"model{number % 5}")
    with django_assert_max_num_queries(len(one.captured_queries)):
        page = auditor.get("/admin/proxy/message/").content.decode()
    assert page.count('class="field-prompt_excerpt"') == 50


def test_the_count_stops_at_its_bound(auditor, monkeypatch):
    monkeypatch.setattr(BoundedCountPaginator, "COUNT_LIMIT", 3)
    for _ in range(5):
        write()
    page = auditor.get("/admin/proxy/message/").content.decode()
    assert "3+ messages" in page


def test_the_export_actions_write_the_selection_masked_for_an_analyst(analyst):
    chosen = write(prompt="private words")
    write(prompt="not chosen")
    response = analyst.post(
        "/admin/proxy/message/",
        {"action": "export_jsonl", "_selected_action": [chosen.pk], "index": 0},
    )
    assert response.status_code == 200
    body = read(response)
    lines = body.strip().splitlines()
    assert len(lines) == 1
    assert chosen.request_id.hex in lines[0]
    assert '"prompt":null' in lines[0]
    assert "private words" not in body


def test_an_auditor_exports_csv_with_the_text(auditor):
    chosen = write(prompt="visible words")
    response = auditor.post(
        "/admin/proxy/message/",
        {"action": "export_csv", "_selected_action": [chosen.pk], "index": 0},
    )
    body = read(response)
    assert body.startswith("id,timestamp,endpoint,model")
    assert "visible words" in body


def test_only_users_with_the_delete_permission_may_delete(reader):
    message = write()
    client = reader("analyst", "view_message", "view_message_content")
    assert "delete_selected" not in client.get("/admin/proxy/message/").content.decode()
    assert (
        client.post(f"/admin/proxy/message/{message.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )

    reader("admin", "view_message", "delete_message")
    assert "delete_selected" in client.get("/admin/proxy/message/").content.decode()
    response = client.post(f"/admin/proxy/message/{message.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Message.objects.filter(pk=message.pk).exists()
