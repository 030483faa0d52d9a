"""PII masking where it belongs: in the writer, before a message is stored or spooled, never on
the bytes to the client; configurable kinds, admin rules, and re-masking the history."""

import gzip
import io
import uuid
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import pytest
from django.core.management import call_command

from proxy import privacy
from proxy.models import MaskingRule, Message

from .test_proxy_keys import admin_client, csrf_of
from .test_recorder import database_locked

pytestmark = pytest.mark.django_db(transaction=True)

CARD = "4111 1111 1111 1111"
SECRET = "sk-proj-" + "A1b2C3d4" * 4
PROMPT = f"I am ada@example.com, card {CARD}, key {SECRET}, from 192.168.1.20. EMP-123456"
ANSWER = "Write to grace@example.org please."


@pytest.fixture(autouse=True)
def fresh_rules():
    """Masking rules and settings are read once per process: each test reads them anew."""
    privacy.forget()
    yield
    privacy.forget()


def chat(url: str, text: str = PROMPT, answer: str = ANSWER) -> httpx.Response:
    return httpx.post(
        f"{url}/api/chat",
        json={
            "model": "llama3.2",
            "messages": [{"role": "user", "content": text}],
            "stream": False,
        },
        headers={"X-Sim-Text": quote(answer)},
        timeout=30,
    )


def test_the_stored_message_is_masked_while_the_client_gets_ollamas_bytes(proxy, simulator):
    response = chat(proxy.url)

    assert response.content == simulator.stats()["last_response"]
    assert "grace@example.org" in response.json()["message"]["content"]
    proxy.flush()
    message = Message.objects.get()
    expected = "I am [email], card [card], key [secret], from [ip]. EMP-123456"
    assert message.prompt == f"[user]\n{expected}"
    assert message.messages == [{"role": "user", "content": expected}]
    assert message.response == "Write to [email] please."


def test_only_the_kinds_in_pii_mask_are_masked(proxy_settings, start_proxy):
    proxy_settings.PII_MASK = ["email", "secret"]
    proxy = start_proxy()

    chat(proxy.url)

    proxy.flush()
    prompt = Message.objects.get().prompt
    assert "[email]" in prompt and "[secret]" in prompt
    assert CARD in prompt and "192.168.1.20" in prompt


def test_an_empty_pii_mask_turns_the_kinds_off_but_admin_rules_still_apply(
    proxy_settings, start_proxy
):
    proxy_settings.PII_MASK = []
    MaskingRule.objects.create(name="employee-id", pattern=r"\bEMP-\d{6}\b")
    proxy = start_proxy()

    chat(proxy.url)

    proxy.flush()
    prompt = Message.objects.get().prompt
    assert prompt.endswith("[employee-id]")
    assert "ada@example.com" in prompt


def test_a_rule_added_in_the_admin_applies_to_the_next_message(proxy, django_user_model):
    chat(proxy.url)
    with admin_client(proxy.url, django_user_model) as client:
        form = client.get("/admin/proxy/maskingrule/add/")
        saved = client.post(
            "/admin/proxy/maskingrule/add/",
            data={
                "name": "employee-id",
                "pattern": r"\bEMP-\d{6}\b",
                "enabled": "on",
                "csrfmiddlewaretoken": csrf_of(form),
            },
        )
    assert saved.status_code == 302, saved.text
    chat(proxy.url)

    proxy.flush()
    first, second = Message.objects.order_by("id")
    assert first.prompt.endswith("EMP-123456")
    assert second.prompt.endswith("[employee-id]")


@pytest.mark.parametrize(
    ("name", "pattern", "error"),
    [
        ("bad", "(unclosed", "Not a valid regular expression"),
        ("empty", r"\d*", "matches empty text"),
        ("Bad Name", r"\d+", "lowercase letters"),
    ],
)
def test_the_admin_refuses_a_rule_that_cannot_work(proxy, django_user_model, name, pattern, error):
    with admin_client(proxy.url, django_user_model) as client:
        form = client.get("/admin/proxy/maskingrule/add/")
        page = client.post(
            "/admin/proxy/maskingrule/add/",
            data={"name": name, "pattern": pattern, "csrfmiddlewaretoken": csrf_of(form)},
        )

    assert page.status_code == 200
    assert error in page.text
    assert not MaskingRule.objects.exists()


def test_spooled_messages_are_masked_before_they_reach_the_disk(
    proxy_settings, start_proxy, wait_until
):
    proxy_settings.RECORDER_DB_TIMEOUT = 0.2
    proxy = start_proxy()
    with database_locked():
        chat(proxy.url)
        proxy.flush()
        spooled = b"".join(
            gzip.decompress(path.read_bytes())
            for path in proxy_settings.RECORDER_SPOOL_DIR.glob("spool-*")
        )

    assert b"[email]" in spooled
    for raw in ("ada@example.com", "grace@example.org", SECRET, CARD):
        assert raw.encode() not in spooled
    wait_until(lambda: Message.objects.count() == 1)
    assert "[email]" in Message.objects.get().prompt


def stored(prompt: str, response: str = "", **fields) -> Message:
    """A message as an older version without these rules stored it."""
    return Message.objects.create(
        request_id=uuid.uuid4(),
        timestamp=datetime(2026, 3, 2, 12, tzinfo=UTC),
        endpoint="/api/chat",
        status="success",
        latency_seconds=0.5,
        prompt=prompt,
        response=response,
        messages=[{"role": "user", "content": prompt}],
        **fields,
    )


def test_remask_messages_applies_todays_rules_to_the_history(db):
    plain = stored("nothing to hide here", "fine")
    older = [stored(f"mail ada{number}@example.com EMP-00000{number}") for number in range(5)]
    MaskingRule.objects.create(name="employee-id", pattern=r"\bEMP-\d{6}\b")
    out = io.StringIO()

    call_command("remask_messages", "--batch-size", "2", stdout=out)

    for message in older:
        message.refresh_from_db()
        assert message.prompt == "mail [email] [employee-id]"
        assert message.messages == [{"role": "user", "content": "mail [email] [employee-id]"}]
    plain.refresh_from_db()
    assert plain.prompt == "nothing to hide here"
    assert "Re-masked 5 of 6 message(s)." in out.getvalue()


def test_after_remasking_the_search_no_longer_finds_the_masked_words(db):
    stored("write to ada@example.com today")
    assert Message.objects.search("example").count() == 1

    call_command("remask_messages", stdout=io.StringIO())

    assert Message.objects.search("example").count() == 0
    assert Message.objects.search("email today").count() == 1


def test_remask_messages_says_when_masking_is_off(settings, db):
    settings.PII_MASK = []
    out = io.StringIO()

    call_command("remask_messages", stdout=out)

    assert "Masking is off" in out.getvalue()
