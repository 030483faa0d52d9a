"""Model management routes (pull, push, create, copy, delete, blobs): open like Ollama by
default, for admin keys only or for nobody when configured."""

import os
import subprocess
import sys

import httpx
import pytest
from django.conf import settings

from proxy.models import ProxyKey

pytestmark = pytest.mark.django_db(transaction=True)

MANAGEMENT = [
    ("POST", "/api/pull", {"model": "llama3.2"}),
    ("POST", "/api/push", {"model": "me/llama3.2"}),
    ("POST", "/api/create", {"model": "mine", "from": "llama3.2"}),
    ("POST", "/api/copy", {"source": "llama3.2", "destination": "copy"}),
    ("DELETE", "/api/delete", {"model": "llama3.2"}),
    ("HEAD", "/api/blobs/sha256:" + "0" * 64, None),
    ("POST", "/api/blobs/sha256:" + "0" * 64, None),
]


@pytest.fixture
def keys(django_user_model):
    owner = django_user_model.objects.create_user("ops")
    return {
        "plain": ProxyKey.issue(owner, "plain")[1],
        "admin": ProxyKey.issue(owner, "admin", is_admin=True)[1],
    }


def send(url: str, method: str, path: str, body, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=30)


def test_by_default_they_are_relayed_like_any_other_route(proxy, simulator):
    for method, path, body in MANAGEMENT:
        assert send(proxy.url, method, path, body).status_code != 403, path

    assert simulator.stats()["requests"] == len(MANAGEMENT)


@pytest.mark.parametrize(("method", "path", "body"), MANAGEMENT)
def test_for_admin_keys_only_other_callers_get_403_in_ollamas_format(
    proxy_settings, start_proxy, simulator, keys, method, path, body
):
    proxy_settings.PROXY_ALLOW_MANAGEMENT = "admin-keys"
    proxy = start_proxy()

    anonymous = send(proxy.url, method, path, body)
    plain = send(proxy.url, method, path, body, keys["plain"])
    assert simulator.stats()["requests"] == 0
    admin = send(proxy.url, method, path, body, keys["admin"])

    for refused in (anonymous, plain):
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/json; charset=utf-8"
        if method != "HEAD":
            assert refused.json() == {"error": "forbidden: model management needs an admin key"}
    assert admin.status_code != 403
    assert simulator.stats()["requests"] == 1


def test_turned_off_even_admin_keys_get_403(proxy_settings, start_proxy, simulator, keys):
    proxy_settings.PROXY_ALLOW_MANAGEMENT = "none"
    proxy = start_proxy()

    response = send(proxy.url, "POST", "/api/pull", {"model": "llama3.2"}, keys["admin"])

    assert response.status_code == 403
    assert response.json() == {"error": "forbidden: model management is turned off on this server"}
    assert simulator.stats()["requests"] == 0


def test_restricting_management_leaves_the_other_routes_open(proxy_settings, start_proxy):
    proxy_settings.PROXY_ALLOW_MANAGEMENT = "none"
    proxy = start_proxy()

    assert httpx.get(f"{proxy.url}/api/tags").status_code == 200
    assert httpx.post(f"{proxy.url}/api/show", json={"model": "llama3.2"}).status_code == 200
    generate = {"model": "llama3.2", "prompt": "Hi", "stream": False}
    assert httpx.post(f"{proxy.url}/api/generate", json=generate).status_code == 200


def allowed_management(tmp_path, **env) -> str:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PROXY_")}
    environment.update(DATA_DIR=str(tmp_path), **env)
    code = "from django.conf import settings; print(settings.PROXY_ALLOW_MANAGEMENT)"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return (result.stdout.strip().splitlines() or [""])[-1] + result.stderr


def test_the_default_is_open_and_admin_keys_once_keys_are_required(tmp_path):
    assert allowed_management(tmp_path) == "all"
    assert allowed_management(tmp_path, PROXY_REQUIRE_KEY="1") == "admin-keys"
    assert allowed_management(tmp_path, PROXY_REQUIRE_KEY="1", PROXY_ALLOW_MANAGEMENT="all") == (
        "all"
    )
    assert "PROXY_ALLOW_MANAGEMENT" in allowed_management(tmp_path, PROXY_ALLOW_MANAGEMENT="some")
