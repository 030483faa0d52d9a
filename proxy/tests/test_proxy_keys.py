"""Proxy keys: they attribute messages to their owners, are never forwarded, can be required,
revoked, created in the admin and by command, and never cost a query per request."""

import contextlib
import io
import re
from datetime import timedelta

import httpx
import ollama
import openai
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from proxy import categories, costs, privacy
from proxy.models import Message, ProxyKey, key_digest

from .metrics_scrape import requests_counted, scrape

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]
GENERATE = {"model": "llama3.2", "prompt": "Hi", "stream": False}


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice")


@pytest.fixture
def alice_key(alice):
    return ProxyKey.issue(alice, "laptop")[1]


@pytest.fixture
def keys_required(proxy_settings):
    proxy_settings.PROXY_REQUIRE_KEY = True
    proxy_settings.PROXY_KEY_REFRESH_SECONDS = 0.1
    return proxy_settings


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def test_a_valid_key_names_its_owner_as_the_user_and_never_goes_upstream(
    alice_key, start_proxy, simulator
):
    proxy = start_proxy()

    reply = ollama.Client(host=proxy.url, headers=bearer(alice_key)).chat(
        model="llama3.2", messages=QUESTION
    )

    assert reply.message.content
    assert "authorization" not in simulator.stats()["last_request"]["headers"]
    proxy.flush()
    assert Message.objects.get().user == "alice"


def test_the_openai_sdk_api_key_is_a_proxy_key(alice_key, start_proxy, simulator):
    proxy = start_proxy()
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=alice_key)

    client.chat.completions.create(model="llama3.2", messages=QUESTION)

    assert "authorization" not in simulator.stats()["last_request"]["headers"]
    proxy.flush()
    assert Message.objects.get().user == "alice"


def test_a_trusted_user_header_still_names_the_user_behind_a_shared_key(
    alice_key, proxy_settings, start_proxy
):
    proxy_settings.PROXY_USER_HEADERS = ["x-openwebui-user-email"]
    proxy = start_proxy()

    httpx.post(
        f"{proxy.url}/api/generate",
        json=GENERATE,
        headers={**bearer(alice_key), "X-OpenWebUI-User-Email": "bob@example.com"},
    )

    proxy.flush()
    assert Message.objects.get().user == "bob@example.com"


def test_without_keys_the_proxy_stays_open_and_names_the_client_ip(proxy, simulator):
    response = httpx.post(
        f"{proxy.url}/api/generate", json=GENERATE, headers=bearer("someone-elses-token")
    )

    assert response.status_code == 200
    # Not one of ours: passed on untouched, for whatever sits in front of Ollama.
    seen = simulator.stats()["last_request"]["headers"]
    assert seen["authorization"] == "Bearer someone-elses-token"
    proxy.flush()
    assert Message.objects.get().user == "127.0.0.1"


def test_with_keys_required_no_key_gets_401_in_ollamas_format_and_is_counted(
    keys_required, start_proxy, simulator
):
    proxy = start_proxy()
    before = requests_counted(proxy.url, endpoint="/api/chat", status="error")

    with pytest.raises(ollama.ResponseError) as raised:
        ollama.Client(host=proxy.url).chat(model="llama3.2", messages=QUESTION)
    response = httpx.post(f"{proxy.url}/api/chat", json={"model": "llama3.2"})

    assert raised.value.status_code == 401
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json() == {
        "error": "unauthorized: this server needs a proxy key: Authorization: Bearer <key>"
    }
    assert simulator.stats()["requests"] == 0
    proxy.flush()
    assert requests_counted(proxy.url, endpoint="/api/chat", status="error") == before + 2
    assert Message.objects.count() == 0  # refused requests cannot fill the database


def test_with_keys_required_a_valid_key_passes_and_a_made_up_one_does_not(
    keys_required, alice_key, start_proxy, simulator
):
    proxy = start_proxy()

    good = httpx.post(f"{proxy.url}/api/generate", json=GENERATE, headers=bearer(alice_key))
    made_up = httpx.post(
        f"{proxy.url}/api/generate", json=GENERATE, headers=bearer("omp_" + "x" * 43)
    )

    assert good.status_code == 200
    assert made_up.status_code == 401
    assert made_up.json() == {"error": "unauthorized: invalid or revoked proxy key"}
    assert simulator.stats()["requests"] == 1


def test_health_checks_on_the_root_need_no_key(keys_required, start_proxy):
    proxy = start_proxy()

    assert httpx.get(f"{proxy.url}/").text == "Ollama is running"
    assert httpx.head(f"{proxy.url}/").status_code == 200
    assert httpx.get(f"{proxy.url}/api/tags").status_code == 401


def test_a_key_created_after_the_start_works_at_once(keys_required, alice, start_proxy):
    proxy = start_proxy()
    _, secret = ProxyKey.issue(alice, "new")

    response = httpx.post(f"{proxy.url}/api/generate", json=GENERATE, headers=bearer(secret))

    assert response.status_code == 200


def test_the_first_key_works_before_the_worker_has_read_that_keys_exist(proxy, alice, simulator):
    _, secret = ProxyKey.issue(alice, "first")  # the proxy started with no key at all

    response = httpx.post(f"{proxy.url}/api/generate", json=GENERATE, headers=bearer(secret))

    assert response.status_code == 200
    assert "authorization" not in simulator.stats()["last_request"]["headers"]
    proxy.flush()
    assert Message.objects.get().user == "alice"


def test_a_revoked_key_is_refused_within_the_refresh_interval(
    keys_required, alice_key, start_proxy, wait_until
):
    proxy = start_proxy()
    assert httpx.get(f"{proxy.url}/api/tags", headers=bearer(alice_key)).status_code == 200

    call_command("revoke_proxy_key", alice_key[:12], stdout=io.StringIO())

    def refused():
        """The revoked key gets 401."""
        return httpx.get(f"{proxy.url}/api/tags", headers=bearer(alice_key)).status_code == 401

    wait_until(refused)


def test_a_revoked_key_is_refused_even_when_keys_are_not_required(alice, start_proxy, simulator):
    key, secret = ProxyKey.issue(alice, "old")
    key.revoked = True
    key.save()
    proxy = start_proxy()

    response = httpx.post(f"{proxy.url}/api/generate", json=GENERATE, headers=bearer(secret))

    assert response.status_code == 401
    assert simulator.stats()["requests"] == 0


def test_the_key_of_a_deactivated_user_is_refused(keys_required, alice, alice_key, start_proxy):
    alice.is_active = False
    alice.save()
    proxy = start_proxy()

    response = httpx.get(f"{proxy.url}/api/tags", headers=bearer(alice_key))

    assert response.status_code == 401


def test_requests_with_a_key_cost_no_database_query(
    keys_required, alice_key, start_proxy, monkeypatch
):
    keys_required.PROXY_KEY_REFRESH_SECONDS = 60
    # The writer's price, category and masking caches are per process and outlive a test: read
    # them afresh in the warm-up below, and not again within this test.
    for cache in (costs.PRICES, categories.RULES, privacy.MASKERS):
        monkeypatch.setattr(cache, "every", 3600.0)
        cache.forget()
    proxy = start_proxy()
    with httpx.Client(base_url=proxy.url, headers=bearer(alice_key)) as client:
        client.get("/api/tags")  # warms the writer's price and rule caches
        proxy.flush()
        before = queries_run(proxy.url)
        for _ in range(20):
            assert client.get("/api/tags").status_code == 200
        proxy.flush()

    assert queries_run(proxy.url) == before


def queries_run(url: str) -> float:
    """Every query this process ran through Django, as django-prometheus counts them."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(scrape(url))
        for sample in family.samples
        if sample.name in {"django_db_execute_total", "django_db_execute_many_total"}
    )


def test_last_use_is_written_at_the_next_refresh(keys_required, alice_key, start_proxy, wait_until):
    proxy = start_proxy()
    before = timezone.now()

    httpx.get(f"{proxy.url}/api/tags", headers=bearer(alice_key))

    def noted():
        """last_used_at is set."""
        used = ProxyKey.objects.get().last_used_at
        return used is not None and used >= before - timedelta(seconds=1)

    wait_until(noted)


def test_create_proxy_key_prints_the_key_once_and_keeps_only_its_hash(alice):
    out, err = io.StringIO(), io.StringIO()

    call_command("create_proxy_key", "alice", "--name", "ci", "--admin", stdout=out, stderr=err)

    secret = out.getvalue().strip()
    assert re.fullmatch(r"omp_[A-Za-z0-9_-]{43}", secret)
    key = ProxyKey.objects.get()
    assert (key.name, key.is_admin, key.user, key.prefix) == ("ci", True, alice, secret[:12])
    assert key.key_hash == key_digest(secret)
    assert secret not in err.getvalue()
    assert not ProxyKey.objects.filter(key_hash=secret).exists()


def test_create_proxy_key_refuses_an_unknown_user(db):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        call_command("create_proxy_key", "nobody")


def test_revoke_proxy_key_needs_an_unambiguous_prefix(alice):
    key, secret = ProxyKey.issue(alice, "one")

    with pytest.raises(CommandError, match="at least 8"):
        call_command("revoke_proxy_key", "omp_")
    with pytest.raises(CommandError, match="No active proxy key"):
        call_command("revoke_proxy_key", "omp_zzzzzzzz")
    out = io.StringIO()
    call_command("revoke_proxy_key", f"{key.prefix}…", stdout=out)

    key.refresh_from_db()
    assert key.revoked
    assert f"Revoked {key}" in out.getvalue()
    assert secret not in out.getvalue()


# --- The admin ---------------------------------------------------------------------------------


@contextlib.contextmanager
def admin_client(server_url: str, django_user_model):
    """A browser-like client logged into the admin as a superuser."""
    django_user_model.objects.create_superuser("root", password="correct horse battery")
    with httpx.Client(base_url=server_url, timeout=30) as client:
        page = client.get("/admin/login/")
        done = client.post(
            "/admin/login/?next=/admin/",
            data={
                "username": "root",
                "password": "correct horse battery",
                "csrfmiddlewaretoken": csrf_of(page),
            },
        )
        assert done.status_code == 302, done.text
        yield client


def csrf_of(page) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def test_the_admin_shows_a_new_key_once_and_it_works(
    keys_required, alice, start_proxy, django_user_model
):
    proxy = start_proxy()
    with admin_client(proxy.url, django_user_model) as client:
        form = client.get("/admin/proxy/proxykey/add/")
        page = client.post(
            "/admin/proxy/proxykey/add/",
            data={"user": alice.pk, "name": "Open WebUI", "csrfmiddlewaretoken": csrf_of(form)},
        )
        listing = client.get("/admin/proxy/proxykey/")

    assert page.status_code == 200, page.text
    assert "no-store" in page.headers["cache-control"]
    secret = re.search(r'<code id="proxy-key"[^>]*>(omp_[^<]+)</code>', page.text).group(1)
    key = ProxyKey.objects.get()
    assert key.key_hash == key_digest(secret)
    assert "Set-Cookie" not in page.headers or secret not in page.headers["Set-Cookie"]
    assert secret not in listing.text and key.prefix in listing.text
    reply = httpx.post(f"{proxy.url}/api/generate", json=GENERATE, headers=bearer(secret))
    assert reply.status_code == 200


def test_the_admin_revokes_keys_with_an_action(proxy, alice, django_user_model):
    key, _ = ProxyKey.issue(alice, "old")
    with admin_client(proxy.url, django_user_model) as client:
        listing = client.get("/admin/proxy/proxykey/")
        client.post(
            "/admin/proxy/proxykey/",
            data={
                "action": "revoke",
                "_selected_action": [key.pk],
                "csrfmiddlewaretoken": csrf_of(listing),
            },
        )

    key.refresh_from_db()
    assert key.revoked
