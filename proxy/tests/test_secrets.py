"""Secrets never stored or logged: after traffic carrying bearer values (ours and others'),
cookies, API-key headers, a key in a query string and an `sk-` key inside a prompt, none of
them is in the messages, the log, an error body, the spool, an export or /metrics; the prompt's
key is masked."""

import gzip
import json
import logging
import secrets

import httpx
import ollama
import openai
import pytest

from proxy import privacy
from proxy.models import Message, ProxyKey

from .test_recorder import database_locked

pytestmark = pytest.mark.django_db(transaction=True)


def made_up(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(24)


@pytest.fixture
def values(django_user_model):
    """The secrets the traffic carries, each unique so that finding it anywhere is a leak."""
    owner = django_user_model.objects.create_user("alice")
    return {
        "proxy key": ProxyKey.issue(owner, "laptop")[1],
        "wrong proxy key": made_up("omp_"),
        "their bearer": made_up("theirs-"),
        "cookie": made_up("cookie-"),
        "x-api-key": made_up("apikey-"),
        "query key": made_up("query-"),
        "key in a prompt": made_up("sk-proj-"),
    }


@pytest.fixture(autouse=True)
def fresh_rules():
    privacy.forget()
    yield
    privacy.forget()


def send_traffic(url: str, values: dict) -> list[bytes]:
    """Requests of every kind, carrying the secrets; the bodies of the answers."""
    prompt = f"My key is {values['key in a prompt']}, keep it safe."
    carried = {
        "Cookie": f"session={values['cookie']}",
        "X-Api-Key": values["x-api-key"],
        "Api-Key": values["x-api-key"],
    }
    bodies = []
    ours = {"Authorization": f"Bearer {values['proxy key']}", **carried}
    theirs = {"Authorization": f"Bearer {values['their bearer']}", **carried}
    for headers in (ours, theirs):
        client = ollama.Client(host=url, headers=headers)
        client.chat(model="llama3.2", messages=[{"role": "user", "content": prompt}])
        client.generate(model="llama3.2", prompt=prompt)
        with pytest.raises(ollama.ResponseError):
            ollama.Client(host=url, headers={**headers, "X-Sim-Fail": "500"}).generate(
                model="llama3.2", prompt=prompt
            )
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=values["proxy key"], default_headers=carried)
    sdk.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": prompt}])
    for headers in (
        {"Authorization": f"Bearer {values['wrong proxy key']}", **carried},
        {**theirs, "X-Sim-Fail": "midstream"},
        theirs,
    ):
        response = httpx.post(
            f"{url}/api/generate?key={values['query key']}",
            json={"model": "llama3.2", "prompt": prompt, "stream": False},
            headers=headers,
        )
        bodies.append(response.content)
    bodies.append(httpx.get(f"{url}/api/tags?key={values['query key']}", headers=theirs).content)
    bodies.append(httpx.post(f"{url}/api/show", json={"model": "nope"}, headers=theirs).content)
    return bodies


def leaks(text: str, values: dict) -> list[str]:
    return [name for name, value in values.items() if value in text]


def test_no_secret_reaches_a_message_a_log_an_error_body_an_export_or_a_metric(
    proxy, values, caplog, exports, wait_until
):
    caplog.set_level(logging.DEBUG)

    bodies = send_traffic(proxy.url, values)

    proxy.flush()
    messages = list(Message.objects.values())
    assert len(messages) == 9  # the refused one and the non-model routes are not stored
    stored = json.dumps(messages, default=str)
    assert leaks(stored, values) == []
    assert stored.count("[secret]") >= 9  # the prompt's key is there, masked
    assert {message["user"] for message in messages} == {"alice", "127.0.0.1"}
    assert leaks(caplog.text, values) == []
    assert leaks(b"\n".join(bodies).decode("utf-8", "replace"), values) == []
    assert leaks(httpx.get(f"{proxy.url}/metrics").text, values) == []

    for exported in exports(proxy.url).values():
        assert "[secret]" in exported
        assert leaks(exported, values) == []


def test_no_secret_reaches_the_spool(proxy_settings, start_proxy, values, wait_until):
    proxy_settings.RECORDER_DB_TIMEOUT = 0.2
    proxy = start_proxy()
    with database_locked():
        send_traffic(proxy.url, values)
        proxy.flush()
        spooled = b"".join(
            gzip.decompress(path.read_bytes())
            for path in proxy_settings.RECORDER_SPOOL_DIR.glob("spool-*")
        ).decode()

    assert spooled.count("[secret]") >= 9
    assert leaks(spooled, values) == []
    wait_until(lambda: Message.objects.count() == 9)


def test_our_key_never_goes_upstream_and_other_bearer_values_do(proxy, simulator, values):
    send_traffic(proxy.url, values)

    upstream = json.dumps(httpx.get(f"{simulator.url}/_sim/requests").json())
    assert values["proxy key"] not in upstream
    assert values["wrong proxy key"] not in upstream
    # Not ours: relayed as the client sent it (Ollama ignores it; a proxy in front may not).
    assert values["their bearer"] in upstream
