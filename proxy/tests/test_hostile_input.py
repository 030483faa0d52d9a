"""Hostile input: SQL metacharacters and very long strings in filters, search and headers;
malformed JSON and wrong content types; oversized bodies; invalid UTF-8, NUL and lone
surrogates in prompts. Clear errors, exactly one message each, nothing lost, no 500.

Elsewhere: path traversal and symbolic links in the archive directory (test_retention.py);
CSV formula injection in exports (analytics/tests/test_export.py, `neutralise`).
"""

import json

import httpx
import pytest
from django.contrib.auth.models import Permission
from django.db import connection

from analytics.models import ApiToken
from proxy.models import Message

pytestmark = pytest.mark.django_db(transaction=True)

SQL_METACHARACTERS = [
    "' OR '1'='1",
    '"; DROP TABLE proxy_message; --',
    "llama3.2' UNION SELECT prompt FROM proxy_message --",
    "%",
    "_",
    "\\",
    "*",
    "NEAR(sky blue)",
    'sky" OR "x',
    "sky* -blue ^AND",
    "') OR 1=1; --",
    "🌍 日本語 ∑",
]
TEXT_FILTERS = ["search", "model", "user", "endpoint", "category"]
GENERATE = {"model": "llama3.2", "prompt": "Why is the sky blue?", "stream": False}


@pytest.fixture
def api(proxy, django_user_model):
    analyst = django_user_model.objects.create_user("analyst")
    for codename in ("view_message", "view_message_content"):
        analyst.user_permissions.add(Permission.objects.get(codename=codename))
    _, token = ApiToken.issue(analyst, "hostile tests")
    with httpx.Client(
        base_url=f"{proxy.url}/analytics", headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield client


@pytest.fixture
def recorded(proxy):
    """Two messages through the proxy, one of them with a hostile-looking model name."""
    httpx.post(f"{proxy.url}/api/generate", json=GENERATE)
    httpx.post(f"{proxy.url}/api/generate", json={**GENERATE, "model": "' OR '1'='1"})
    proxy.flush()
    return Message.objects.count()


def table_intact() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM proxy_message")
        return cursor.fetchone()[0] >= 0


@pytest.mark.parametrize("name", TEXT_FILTERS)
@pytest.mark.parametrize("value", SQL_METACHARACTERS)
def test_sql_metacharacters_in_filters_are_only_values(api, recorded, name, value):
    for path in ("/messages", "/aggregations", "/export?format=jsonl"):
        response = api.get(path, params={name: value})
        assert response.status_code in {200, 422}, (path, response.text)

    listed = api.get("/messages", params={name: value}).json()
    if name == "model" and value == "' OR '1'='1":
        assert [row["model"] for row in listed["messages"]] == [value]
    elif name != "search":
        assert listed["messages"] == []
    assert table_intact() and Message.objects.count() == recorded


def test_a_search_full_of_operators_finds_only_the_words(api, recorded):
    found = api.get("/messages", params={"search": 'sky" * (blue) -"why'}).json()

    assert {row["model"] for row in found["messages"]} == {"llama3.2", "' OR '1'='1"}
    nothing = api.get("/messages", params={"search": "sky OR nonexistentword"}).json()
    assert nothing["messages"] == []


@pytest.mark.parametrize("name", [*TEXT_FILTERS, "cursor", "start_time", "status"])
def test_very_long_filter_values_get_a_422_not_a_scan(api, recorded, name):
    response = api.get("/messages", params={name: "x" * 10_000})

    assert response.status_code == 422
    assert name in response.text


@pytest.mark.parametrize("message_id", ["' OR 1=1 --", "..%2F..%2Fetc%2Fpasswd", "x" * 5000])
def test_a_hostile_message_id_is_simply_not_found(api, recorded, message_id):
    assert api.get(f"/messages/{message_id}").status_code == 404


# --- Headers ---------------------------------------------------------------------------------


def test_long_and_sql_like_headers_are_relayed_and_recorded_bounded(proxy_settings, start_proxy):
    proxy_settings.PROXY_USER_HEADERS = ["x-openwebui-user-email"]
    proxy = start_proxy()
    hostile = "'; DROP TABLE proxy_message; -- " + "A" * 6_000  # under the simulator's 8 KiB line

    response = httpx.post(
        f"{proxy.url}/api/generate",
        json=GENERATE,
        headers={
            "User-Agent": hostile,
            "X-OpenWebUI-User-Email": hostile,
            "Authorization": "Bearer " + "z" * 6_000,
            "X-Category": hostile,
        },
    )

    assert response.status_code == 200
    proxy.flush()
    message = Message.objects.get()
    assert message.user == hostile[:255]
    assert message.user_agent == hostile[:512]
    ours_but_huge = httpx.get(
        f"{proxy.url}/api/tags", headers={"Authorization": "Bearer omp_" + "z" * 6_000}
    )
    assert ours_but_huge.status_code == 401


# --- Bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/api/chat", b'{"model": "llama3.2", "messages": [', "application/json"),
        ("/api/generate", b"{not json at all", "application/json"),
        ("/api/generate", b"", "application/json"),
        ("/api/generate", b"[1, 2, 3]", "application/json"),
        ("/api/embed", b'{"model": 7, "input": {"a": null}}', "application/json"),
        ("/v1/chat/completions", b'{"model": "llama3.2", "messages": "hi"', "application/json"),
        ("/api/generate", json.dumps(GENERATE).encode(), "text/plain"),
        ("/api/chat", b"model=llama3.2&prompt=hi", "application/x-www-form-urlencoded"),
        ("/v1/completions", b"--b\r\n\r\nhi\r\n--b--", "multipart/form-data; boundary=b"),
    ],
)
def test_malformed_bodies_get_ollamas_own_answer_and_exactly_one_message(
    proxy, simulator, path, body, content_type
):
    proxied = httpx.post(f"{proxy.url}{path}", content=body, headers={"Content-Type": content_type})

    assert proxied.content == simulator.stats()["last_response"]
    assert simulator.stats()["last_response_status"] == proxied.status_code
    proxy.flush()
    message = Message.objects.get()
    assert message.endpoint == path
    assert message.http_status == proxied.status_code
    assert message.status == ("success" if proxied.status_code < 400 else "error")


def test_an_oversized_body_gets_413_before_ollama_is_contacted(proxy, simulator, settings):
    settings.PROXY_MAX_BODY_BYTES = 10_000
    big = {"model": "llama3.2", "prompt": "x" * 20_000}

    declared = httpx.post(f"{proxy.url}/api/generate", json=big)
    streamed = httpx.post(
        f"{proxy.url}/api/generate", content=iter([b'{"prompt": "', b"x" * 20_000, b'"}'])
    )

    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        assert "request body too large" in response.json()["error"]
    assert simulator.stats()["requests"] == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "llama3.2", "prompt": "caf\xe9 \xff\xfe bad", "stream": false}',
        b'{"model": "llama3.2", "prompt": "nul \\u0000 inside", "stream": false}',
        b'{"model": "llama3.2", "prompt": "half \\ud800 pair", "stream": false}',
        b'{"model": "llama3.2\\u0000x", "prompt": "hi", "stream": false}',
        b'{"model": "llama3.2", "messages": [{"role": "us\\u0000er", "content": "\\udfff"}]}',
    ],
)
def test_text_no_database_can_store_is_recorded_without_losing_the_message(proxy, body):
    path = "/api/chat" if b"messages" in body else "/api/generate"

    httpx.post(f"{proxy.url}{path}", content=body)
    httpx.post(f"{proxy.url}/api/generate", json=GENERATE)  # the same batch carries on

    proxy.flush()
    assert Message.objects.count() == 2
    odd = Message.objects.exclude(prompt=GENERATE["prompt"]).get()
    assert "\x00" not in odd.prompt + odd.model + json.dumps(odd.messages)
    assert proxy.forwarder.recorder.dropped == 0


@pytest.mark.parametrize("name", TEXT_FILTERS)
@pytest.mark.parametrize("value", ["\x00", "llama\x00", "a\x1bb"])
def test_control_characters_in_filters_get_a_422_on_every_database(api, recorded, name, value):
    for path in ("/messages", "/aggregations", "/export?format=jsonl"):
        response = api.get(path, params={name: value})

        assert response.status_code == 422, (path, response.text)
        assert "control characters" in response.text
