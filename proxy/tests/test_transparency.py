"""Clients cannot tell the proxy from Ollama: same bytes, same headers, same errors."""

import httpx
import pytest

from proxy.models import Message

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "Say <think> & more"}]}


def sent_by_simulator(simulator) -> bytes:
    return simulator.stats()["last_response"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {**CHAT, "stream": True}),
        ("/api/chat", {**CHAT, "stream": False}),
        ("/api/generate", {"model": "llama3.2", "prompt": "<b>", "stream": True}),
        ("/api/generate", {"model": "llama3.2", "prompt": "<b>", "stream": False}),
        ("/api/embed", {"model": "all-minilm", "input": "hello"}),
        (
            "/v1/chat/completions",
            {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        ),
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", {"model": "llama3.2", "prompt": "Hi", "stream": True}),
        ("/api/pull", {"model": "llama3.2"}),
    ],
)
def test_it_relays_the_exact_bytes_ollama_wrote(proxy, simulator, path, body):
    response = httpx.post(f"{proxy.url}{path}", json=body)

    assert response.content == sent_by_simulator(simulator)
    assert response.status_code == 200


def test_it_relays_status_content_type_and_headers_unchanged(proxy, simulator):
    for path, content_type in [
        ("/", "text/plain; charset=utf-8"),
        ("/api/version", "application/json; charset=utf-8"),
        ("/api/tags", "application/json; charset=utf-8"),
        ("/v1/models", "application/json"),
    ]:
        direct = httpx.get(f"{simulator.url}{path}")
        proxied = httpx.get(f"{proxy.url}{path}")
        assert proxied.status_code == direct.status_code == 200
        assert proxied.headers["content-type"] == content_type
        assert proxied.headers["content-length"] == direct.headers["content-length"]
        assert proxied.content == direct.content
    streamed = httpx.post(f"{proxy.url}/api/generate", json={"model": "llama3.2", "prompt": "Hi"})
    assert streamed.headers["content-type"] == "application/x-ndjson"
    assert streamed.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in streamed.headers
    assert len(streamed.headers["x-request-id"]) == 32


def test_a_head_request_gets_headers_and_no_body(proxy):
    response = httpx.head(f"{proxy.url}/")

    assert response.status_code == 200
    assert response.content == b""


def test_it_forwards_unknown_paths_methods_and_queries_verbatim(proxy, simulator):
    response = httpx.request(
        "DELETE", f"{proxy.url}/api/delete/api/delete?x=1&y=%20a", json={"model": "m"}
    )
    seen = simulator.stats()["last_request"]

    assert (response.status_code, response.text) == (404, "404 page not found")
    assert seen["method"] == "DELETE"
    assert seen["path"] == "/api/delete/api/delete"
    assert seen["query"] == "x=1&y=%20a"


def test_it_relays_method_not_allowed_with_its_allow_header(proxy):
    response = httpx.get(f"{proxy.url}/api/show")

    assert response.status_code == 405
    assert response.text == "405 method not allowed"
    assert "POST" in response.headers["allow"]


def test_it_sends_the_upstreams_host_and_drops_hop_by_hop_headers(proxy, simulator):
    httpx.post(
        f"{proxy.url}/api/show",
        json={"model": "llama3.2"},
        headers={
            "Host": "evil.example.com",
            "Connection": "keep-alive, X-Private",
            "X-Private": "1",
            "Keep-Alive": "timeout=5",
            "User-Agent": "GitHubCopilotChat/1.0",
            "Authorization": "Bearer anything",
        },
    )
    seen = simulator.stats()["last_request"]["headers"]

    assert seen["host"] == simulator.url.removeprefix("http://")
    assert "x-private" not in seen and "keep-alive" not in seen
    assert seen["user-agent"] == "GitHubCopilotChat/1.0"
    assert seen["authorization"] == "Bearer anything"


def test_it_keeps_a_utf8_character_split_across_two_upstream_writes_intact(proxy, simulator):
    chunks = []
    with httpx.stream(
        "POST",
        f"{proxy.url}/api/generate",
        json={"model": "llama3.2", "prompt": "Hi"},
        headers={"X-Sim-Split-UTF8": "1"},
    ) as response:
        chunks.extend(response.iter_raw())
    body = b"".join(chunks)

    assert body == sent_by_simulator(simulator)
    assert any(_ends_inside_a_character(chunk) for chunk in chunks)  # the split reached us
    proxy.flush()
    text = Message.objects.get().response
    assert "日本語" in text and "🌍" in text and "\ufffd" not in text


def _ends_inside_a_character(chunk: bytes) -> bool:
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_it_answers_cors_preflights_for_allowed_origins(proxy):
    response = httpx.options(
        f"{proxy.url}/api/chat",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in response.headers["access-control-allow-methods"]


def test_it_allows_configured_origins_and_refuses_others_like_ollama(proxy, settings):
    allowed = httpx.get(f"{proxy.url}/api/tags", headers={"Origin": "http://localhost:5173"})
    refused = httpx.get(f"{proxy.url}/api/tags", headers={"Origin": "https://evil.example"})

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert (refused.status_code, refused.content) == (403, b"")


def test_it_allows_origins_added_by_setting(proxy_settings, start_proxy):
    proxy_settings.PROXY_CORS_ORIGINS = ["https://*.example.com"]
    proxy = start_proxy()

    response = httpx.get(f"{proxy.url}/api/tags", headers={"Origin": "https://chat.example.com"})

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://chat.example.com"


def test_it_streams_a_blob_upload_through_without_the_body_limit(proxy, simulator, settings):
    settings.PROXY_MAX_BODY_BYTES = 1000
    digest = "sha256:" + "0" * 64

    response = httpx.post(f"{proxy.url}/api/blobs/{digest}", content=iter([b"a" * 65536] * 16))

    seen = simulator.stats()["last_request"]
    assert seen["path"] == f"/api/blobs/{digest}"
    assert seen["body_length"] == 16 * 65536
    assert response.status_code != 413
