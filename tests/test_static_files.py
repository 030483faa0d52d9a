"""Static files under ASGI: WhiteNoise's files streamed by blocks, byte for byte, ranges, HEAD
and revalidations too, without Django's warning about synchronous iterators on every file."""

import asyncio
import warnings
from pathlib import Path

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "vendor/chartjs/chart.umd.js"


@pytest.fixture
def collected(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", interactive=False, verbosity=0)
    return settings


def get(
    path: str, headers: list[tuple[bytes, bytes]] = (), method: str = "GET"
) -> tuple[int, dict, bytes]:
    """One request through Django's ASGI handler (its middleware loaded now), as uvicorn
    sends it."""
    sent, received = [], []

    async def receive():
        if received:  # Django listens for a disconnect until the response is sent
            await asyncio.Event().wait()
        received.append(True)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Django's warning would fail the request
        asyncio.run(ASGIHandler()(scope, receive, send))
    start = sent[0]
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return start["status"], {name.lower(): value for name, value in start["headers"]}, body


def test_a_static_file_is_streamed_whole_without_a_warning(collected):
    expected = (ROOT / "static" / SCRIPT).read_bytes()
    assert len(expected) > 3 * 64 * 1024  # several blocks

    status, headers, body = get(f"/static/{SCRIPT}")

    assert status == 200
    assert body == expected
    assert int(headers[b"content-length"]) == len(expected)


def test_a_range_of_a_static_file_is_the_same_bytes(collected):
    expected = (ROOT / "static" / SCRIPT).read_bytes()

    status, headers, body = get(f"/static/{SCRIPT}", [(b"range", b"bytes=100000-170000")])

    assert status == 206
    assert body == expected[100000:170001]
    assert headers[b"content-range"] == f"bytes 100000-170000/{len(expected)}".encode()


def test_a_revalidation_and_a_head_have_no_body_and_no_warning(collected):
    _, headers, _ = get(f"/static/{SCRIPT}")

    status, _, body = get(f"/static/{SCRIPT}", [(b"if-none-match", headers[b"etag"])])
    assert (status, body) == (304, b"")

    status, headers, body = get(f"/static/{SCRIPT}", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers[b"content-length"]) == (ROOT / "static" / SCRIPT).stat().st_size
