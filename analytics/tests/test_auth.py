"""Who may read what: sessions (CSRF on unsafe methods), API tokens, permissions, and the
fields that need the content permission."""

import contextlib
import re
from datetime import timedelta

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from analytics.models import ApiToken, digest

from .conftest import PASSWORD, client_for, make_user

pytestmark = pytest.mark.django_db(transaction=True)

READING_URLS = [
    "/analytics/messages",
    "/analytics/aggregations",
    "/analytics/models",
    "/analytics/export?format=jsonl",
]


@contextlib.contextmanager
def logged_in(server, user):
    """A browser-like client logged in through the admin's login form."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        form = client.get("/admin/login/")
        done = client.post(
            "/admin/login/?next=/admin/",
            data={
                "username": user.username,
                "password": PASSWORD,
                "csrfmiddlewaretoken": form_csrf(form),
            },
        )
        assert done.status_code == 302, done.text
        assert "sessionid" in client.cookies
        yield client


def form_csrf(page) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


@pytest.fixture
def staff_analyst(django_user_model):
    return make_user(django_user_model, "staff", "view_message", "view_message_content", staff=True)


@pytest.mark.parametrize("url", [*READING_URLS, "/analytics/messages/" + "0" * 32])
def test_without_credentials_every_endpoint_answers_401(server, url):
    assert httpx.get(server.url + url).status_code == 401


@pytest.mark.parametrize(
    "authorization",
    ["Bearer omk_not-a-token", "Bearer", "Token abc", "Basic YWRtaW46YWRtaW4="],
)
def test_a_wrong_bearer_token_answers_401(server, authorization):
    response = httpx.get(
        f"{server.url}/analytics/messages", headers={"Authorization": authorization}
    )

    assert response.status_code == 401


@pytest.mark.parametrize("url", READING_URLS)
def test_a_token_without_the_metadata_permission_answers_403(server, django_user_model, url):
    nobody = make_user(django_user_model, "nobody")
    with client_for(server, nobody) as client:
        response = client.get(url.removeprefix("/analytics"))

    assert response.status_code == 403
    assert "proxy.view_message" in response.text


def test_a_token_reads_as_its_user_and_notes_when_it_was_used(api, analyst, write):
    write({})

    assert api.get("/messages").status_code == 200
    token = ApiToken.objects.get(user=analyst)
    assert token.last_used_at is not None


def test_only_a_hash_of_the_token_is_stored(analyst):
    token, secret = ApiToken.issue(analyst, "script")

    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert secret not in str(stored)
    assert stored["key_hash"] == digest(secret)
    assert secret.startswith(stored["prefix"]) and len(stored["prefix"]) < len(secret) / 3


def test_a_revoked_or_expired_token_answers_401(server, analyst):
    revoked, revoked_secret = ApiToken.issue(analyst, "revoked")
    revoked.revoke()
    _, expired_secret = ApiToken.issue(analyst, "old", timezone.now() - timedelta(seconds=1))

    for secret in (revoked_secret, expired_secret):
        response = httpx.get(
            f"{server.url}/analytics/messages", headers={"Authorization": f"Bearer {secret}"}
        )
        assert response.status_code == 401


def test_the_token_of_a_deactivated_user_answers_401(server, analyst):
    _, secret = ApiToken.issue(analyst, "script")
    analyst.is_active = False
    analyst.save()

    response = httpx.get(
        f"{server.url}/analytics/messages", headers={"Authorization": f"Bearer {secret}"}
    )

    assert response.status_code == 401


def test_without_the_content_permission_prompts_responses_and_errors_are_null(
    server, django_user_model, write
):
    (message,) = write(
        {
            "status": "error",
            "error": "secret text quoted back",
            "thinking": "private thoughts",
            "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        }
    )
    metadata_only = make_user(django_user_model, "metrics", "view_message")
    with client_for(server, metadata_only) as client:
        listed = client.get("/messages").json()["messages"][0]
        detail = client.get(f"/messages/{message.request_id.hex}").json()
        exported = client.get("/export", params={"format": "jsonl"}).text

    for row in (listed, detail):
        assert (row["prompt"], row["response"], row["error"]) == (None, None, None)
        assert (row["model"], row["input_tokens"], row["latency"]) == ("llama3.2", 20, 1.2)
    assert (detail["thinking"], detail["messages"], detail["tool_calls"]) == (None, None, None)
    assert "sky" not in exported and "secret text" not in exported
    assert message.request_id.hex in exported


def test_with_the_content_permission_they_are_there(api, write):
    write({"status": "error", "error": "model not found"})

    row = api.get("/messages").json()["messages"][0]

    assert (row["prompt"], row["error"]) == ("Why is the sky blue?", "model not found")


def test_a_superuser_may_read_everything(server, django_user_model, write):
    write({})
    admin = django_user_model.objects.create_superuser("root", password=None)

    with client_for(server, admin) as client:
        assert client.get("/messages").json()["messages"][0]["prompt"] == "Why is the sky blue?"


def test_a_logged_in_session_reads_the_api(server, staff_analyst, write):
    write({})
    with logged_in(server, staff_analyst) as browser:
        response = browser.get("/analytics/messages")

    assert response.status_code == 200
    assert len(response.json()["messages"]) == 1


def test_a_session_without_the_metadata_permission_gets_403(server, django_user_model):
    clerk = make_user(django_user_model, "clerk", staff=True)
    with logged_in(server, clerk) as browser:
        assert browser.get("/analytics/messages").status_code == 403


def test_a_session_needs_the_csrf_token_on_unsafe_methods(server, staff_analyst):
    with logged_in(server, staff_analyst) as browser:
        without = browser.post("/analytics/tokens", json={"name": "notebook"})
        with_it = browser.post(
            "/analytics/tokens",
            json={"name": "notebook"},
            headers={"X-CSRFToken": browser.cookies["csrftoken"]},
        )

    assert without.status_code == 403
    assert "CSRF" in without.text
    assert with_it.status_code == 201
    assert ApiToken.objects.filter(user=staff_analyst).count() == 1


def test_a_token_issued_in_a_session_works_until_revoked(server, staff_analyst):
    with logged_in(server, staff_analyst) as browser:
        csrf = {"X-CSRFToken": browser.cookies["csrftoken"]}
        issued = browser.post("/analytics/tokens", json={"name": "notebook"}, headers=csrf).json()
        bearer = {"Authorization": f"Bearer {issued['token']}"}
        before = httpx.get(f"{server.url}/analytics/messages", headers=bearer).status_code
        listed = browser.get("/analytics/tokens").json()
        revoked = browser.delete(f"/analytics/tokens/{issued['id']}", headers=csrf)
        after = httpx.get(f"{server.url}/analytics/messages", headers=bearer).status_code

    assert issued["token"].startswith(issued["prefix"])
    assert [token["name"] for token in listed] == ["notebook"]
    assert "token" not in listed[0]
    assert (before, revoked.status_code, after) == (200, 204, 401)


def test_a_token_cannot_issue_or_revoke_tokens(api, analyst):
    token = ApiToken.objects.get(user=analyst)

    assert api.post("/tokens", json={"name": "more"}).status_code == 401
    assert api.delete(f"/tokens/{token.pk}").status_code == 401
    assert ApiToken.objects.filter(user=analyst).count() == 1


def test_a_user_cannot_revoke_someone_elses_token(server, staff_analyst, analyst):
    theirs, _ = ApiToken.issue(analyst, "theirs")
    with logged_in(server, staff_analyst) as browser:
        response = browser.delete(
            f"/analytics/tokens/{theirs.pk}", headers={"X-CSRFToken": browser.cookies["csrftoken"]}
        )

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.is_active


def test_the_command_issues_a_token_that_works(server, analyst, capsys):
    call_command("create_api_token", "analyst", "--name", "cron", "--days", "30")
    secret = capsys.readouterr().out.strip()

    response = httpx.get(
        f"{server.url}/analytics/models", headers={"Authorization": f"Bearer {secret}"}
    )
    assert response.status_code == 200
    token = ApiToken.objects.get(name="cron")
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)


def test_the_command_refuses_an_unknown_user():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("create_api_token", "ghost")


def test_the_admin_issues_a_token_shown_once_and_revokes_it(server, django_user_model):
    make_user(django_user_model, "owner", "view_message")
    admin = django_user_model.objects.create_superuser("root", password=PASSWORD)
    with logged_in(server, admin) as browser:
        csrf = form_csrf(browser.get("/admin/analytics/apitoken/add/"))
        owner = django_user_model.objects.get(username="owner")
        created = browser.post(
            "/admin/analytics/apitoken/add/",
            data={"user": owner.pk, "name": "dashboard", "csrfmiddlewaretoken": csrf},
            follow_redirects=True,
        )
        secret = re.search(r"omk_[A-Za-z0-9_-]{43}", created.text).group(0)
        bearer = {"Authorization": f"Bearer {secret}"}
        works = httpx.get(f"{server.url}/analytics/messages", headers=bearer).status_code
        token = ApiToken.objects.get(name="dashboard")
        csrf = form_csrf(browser.get("/admin/analytics/apitoken/"))
        browser.post(
            "/admin/analytics/apitoken/",
            data={"action": "revoke", "_selected_action": token.pk, "csrfmiddlewaretoken": csrf},
        )
        revoked = httpx.get(f"{server.url}/analytics/messages", headers=bearer).status_code
        change_page = browser.get(f"/admin/analytics/apitoken/{token.pk}/change/").text

    assert (works, revoked) == (200, 401)
    assert token.prefix in change_page and secret not in change_page


def test_the_openapi_docs_are_served(server):
    schema = httpx.get(f"{server.url}/analytics/openapi.json").json()

    assert {
        "/analytics/messages",
        "/analytics/aggregations",
        "/analytics/models",
        "/analytics/export",
    } <= set(schema["paths"])
    assert httpx.get(f"{server.url}/analytics/docs").status_code == 200
