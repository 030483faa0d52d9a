"""/analytics/messages: every filter, combinations, cursor and offset pages, one message in
full, and the errors bad input gets."""

from datetime import timedelta

import pytest

from proxy.models import Message

from .conftest import T0

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def catalogue(write):
    """Five different messages, one minute apart, labelled a (oldest) to e (newest)."""
    written = write(
        {
            "timestamp": T0,
            "model": "llama3.2",
            "user": "alice",
            "endpoint": "/api/chat",
            "category": "code",
            "input_tokens": 10,
            "output_tokens": 100,
            "latency_seconds": 0.5,
            "cost_usd": 0.01,
            "prompt": "Write a python function",
        },
        {
            "timestamp": T0 + timedelta(minutes=1),
            "model": "qwen3",
            "status": "error",
            "http_status": 500,
            "user": "bob",
            "endpoint": "/api/generate",
            "category": "completion",
            "input_tokens": 200,
            "output_tokens": None,
            "latency_seconds": 3.0,
            "ttft_seconds": None,
            "tokens_per_second": None,
            "cost_usd": None,
            "response": "",
            "error": "llama runner process has terminated",
        },
        {
            "timestamp": T0 + timedelta(minutes=2),
            "model": "llama3.2",
            "status": "cancelled",
            "user": "carol",
            "endpoint": "/v1/chat/completions",
            "category": "translation",
            "input_tokens": 50,
            "output_tokens": 5,
            "latency_seconds": 10.0,
            "cost_usd": 0.5,
        },
        {
            "timestamp": T0 + timedelta(minutes=3),
            "model": "all-minilm",
            "user": "alice",
            "endpoint": "/api/embed",
            "category": "embedding",
            "input_tokens": 8,
            "output_tokens": None,
            "latency_seconds": 0.05,
            "cost_usd": 0.0,
            "stream": False,
        },
        {
            "timestamp": T0 + timedelta(minutes=4),
            "model": "qwen3",
            "user": "bob",
            "endpoint": "/api/chat",
            "category": "summarisation",
            "input_tokens": 1000,
            "output_tokens": 300,
            "latency_seconds": 20.0,
            "cost_usd": 2.0,
            "backend": "gpu-2:11434",
        },
    )
    return dict(zip("abcde", written, strict=True))


def labels(response, catalogue) -> str:
    assert response.status_code == 200, response.text
    names = {message.request_id.hex: label for label, message in catalogue.items()}
    return "".join(names[row["id"]] for row in response.json()["messages"])


EPOCH_T0 = int(T0.timestamp())


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, "edcba"),
        ({"model": "llama3.2"}, "ca"),
        ({"user": "bob"}, "eb"),
        ({"endpoint": "/api/chat"}, "ea"),
        ({"category": "translation"}, "c"),
        ({"status": "error"}, "b"),
        ({"status": "cancelled"}, "c"),
        ({"start_time": EPOCH_T0 + 120}, "edc"),
        ({"start_time": "2026-03-02T12:02:00Z"}, "edc"),
        ({"start_time": "2026-03-02T13:02:00+01:00"}, "edc"),
        ({"start_time": "2026-03-02T12:02:00"}, "edc"),
        ({"start_time": f"{EPOCH_T0 + 119.5}"}, "edc"),
        ({"end_time": EPOCH_T0 + 60}, "ba"),
        ({"end_time": "2026-03-02T12:01:00Z"}, "ba"),
        ({"start_time": EPOCH_T0 + 60, "end_time": EPOCH_T0 + 180}, "dcb"),
        ({"min_input_tokens": 50}, "ecb"),
        ({"max_input_tokens": 50}, "dca"),
        ({"min_output_tokens": 100}, "ea"),
        ({"max_output_tokens": 5}, "c"),
        ({"min_latency": 3}, "ecb"),
        ({"max_latency": 0.5}, "da"),
        ({"min_latency": 0.5, "max_latency": 10}, "cba"),
        ({"min_cost": 0.5}, "ec"),
        ({"max_cost": 0.01}, "da"),
        ({"search": "python"}, "a"),
        ({"model": "qwen3", "status": "success"}, "e"),
        ({"user": "alice", "max_latency": 1, "start_time": EPOCH_T0 + 1}, "d"),
        ({"endpoint": "/api/chat", "min_cost": 1, "category": "summarisation"}, "e"),
        ({"model": "llama3.2", "user": "bob"}, ""),
        ({"model": "no-such-model"}, ""),
        ({"backend": "gpu-2:11434"}, "e"),
        ({"backend": "gpu-2:11434", "model": "llama3.2"}, ""),
        ({"model": "", "status": "", "start_time": "", "min_cost": "", "search": ""}, "edcba"),
    ],
)
def test_each_filter_and_combination_selects_the_right_messages(api, catalogue, params, expected):
    assert labels(api.get("/messages", params=params), catalogue) == expected


def test_a_message_has_the_seed_json_names_with_seconds_and_its_request_id(api, catalogue):
    row = api.get("/messages", params={"status": "error"}).json()["messages"][0]

    assert list(row) == [
        "id", "timestamp", "endpoint", "model", "status", "http_status", "user", "client_ip",
        "prompt", "response", "input_tokens", "output_tokens", "latency", "ttft",
        "tokens_per_second", "cost", "category", "error", "stream", "backend",
    ]  # fmt: skip
    assert list(row) == list(Message.JSON_FIELDS)
    assert row["id"] == catalogue["b"].request_id.hex
    assert row["timestamp"] == "2026-03-02T12:01:00Z"
    assert (row["latency"], row["ttft"], row["cost"], row["output_tokens"]) == (
        3.0,
        None,
        None,
        None,
    )
    assert row["error"] == "llama runner process has terminated"


def test_cursor_pages_walk_every_message_once_newest_first(api, catalogue):
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.get("/messages", params=params).json()
        seen.append(labels_of(page, catalogue))
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == ["ed", "cb", "a"]


def test_cursor_pages_keep_their_filters(api, catalogue):
    first = api.get("/messages", params={"limit": 1, "model": "llama3.2"}).json()
    second = api.get(
        "/messages", params={"limit": 1, "model": "llama3.2", "cursor": first["next_cursor"]}
    ).json()

    assert labels_of(first, catalogue) + labels_of(second, catalogue) == "ca"
    assert second["next_cursor"] is None


def test_cursor_pages_do_not_skip_or_repeat_messages_with_the_same_timestamp(api, write):
    written = write(*({"timestamp": T0} for _ in range(7)))
    seen, cursor = [], None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = api.get("/messages", params=params).json()
        seen += [row["id"] for row in page["messages"]]
        cursor = page["next_cursor"]
        if not cursor:
            break

    assert sorted(seen) == sorted(message.request_id.hex for message in written)
    assert len(seen) == 7


def test_offset_pages_still_work(api, catalogue):
    page = api.get("/messages", params={"limit": 2, "offset": 2}).json()

    assert labels_of(page, catalogue) == "cb"
    assert (page["limit"], page["offset"]) == (2, 2)
    following = api.get("/messages", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert labels_of(following, catalogue) == "a"


def test_the_last_page_has_no_next_cursor(api, catalogue):
    page = api.get("/messages", params={"limit": 5}).json()

    assert len(page["messages"]) == 5
    assert page["next_cursor"] is None


def test_one_message_comes_whole_by_its_id_or_its_x_request_id(api, write):
    (message,) = write(
        {
            "thinking": "Let me think.",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}],
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "options": {"temperature": 0.2},
            "done_reason": "stop",
            "total_duration_seconds": 1.5,
            "eval_duration_seconds": 1.0,
            "user_agent": "ollama-python/0.6.3",
        }
    )

    by_hex = api.get(f"/messages/{message.request_id.hex}")
    by_uuid = api.get(f"/messages/{message.request_id}")

    assert by_hex.status_code == by_uuid.status_code == 200
    detail = by_hex.json()
    assert detail == by_uuid.json()
    assert detail["id"] == message.request_id.hex
    assert detail["prompt"] == message.prompt
    assert detail["thinking"] == "Let me think."
    assert detail["tool_calls"][0]["function"]["name"] == "weather"
    assert detail["messages"] == [{"role": "user", "content": "Weather in Paris?"}]
    assert detail["options"] == {"temperature": 0.2}
    assert (detail["total_duration"], detail["eval_duration"]) == (1.5, 1.0)
    assert detail["user_agent"] == "ollama-python/0.6.3"


def test_an_unknown_or_malformed_message_id_is_not_found(api, catalogue):
    assert api.get("/messages/0123456789abcdef0123456789abcdef").status_code == 404
    assert api.get("/messages/not-an-id").status_code == 404


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"limit": 0}, "greater than or equal to 1"),
        ({"limit": -1}, "greater than or equal to 1"),
        ({"limit": 1001}, "less than or equal to 1000"),
        ({"offset": -5}, "greater than or equal to 0"),
        ({"limit": "many"}, "valid integer"),
        ({"start_time": "yesterday"}, "epoch seconds (e.g. 1767225600) or ISO 8601"),
        ({"end_time": "2026-13-45"}, "epoch seconds (e.g. 1767225600) or ISO 8601"),
        ({"start_time": "-5"}, "epoch seconds out of range"),
        ({"start_time": "1e20"}, "epoch seconds out of range"),
        ({"start_time": EPOCH_T0 + 10, "end_time": EPOCH_T0}, "start_time is after end_time"),
        ({"status": "failed"}, "'success', 'error' or 'cancelled'"),
        ({"min_latency": -1}, "greater than or equal to 0"),
        ({"min_input_tokens": 10, "max_input_tokens": 5}, "min_input_tokens is greater"),
        ({"min_cost": "cheap"}, "valid number"),
        ({"search": "?!"}, "search needs at least one word"),
        ({"search": "word " * 101}, "at most 500 characters"),
        ({"model": "m" * 256}, "at most 255 characters"),
        ({"cursor": "garbage"}, "cursor is not one this API returned"),
        ({"cursor": "MTIzOmFiYw"}, "cursor is not one this API returned"),
        ({"cursor": "MTIzOjQ1Ng", "offset": 3}, "either cursor or offset"),
    ],
)
def test_bad_input_gets_a_422_that_says_what_is_wrong(api, params, complaint):
    response = api.get("/messages", params=params)

    assert response.status_code == 422
    assert complaint in response.text


def test_filter_values_reach_the_database_as_parameters_not_sql(api, catalogue):
    hostile = "x' OR '1'='1"
    for name in ("model", "user", "endpoint", "category", "search"):
        response = api.get("/messages", params={name: hostile})
        assert response.status_code == 200, name
        assert response.json()["messages"] == [], name
    assert Message.objects.count() == 5


def labels_of(page: dict, catalogue) -> str:
    names = {message.request_id.hex: label for label, message in catalogue.items()}
    return "".join(names[row["id"]] for row in page["messages"])


def test_the_list_and_the_live_feed_give_a_message_the_same_shape(api, write):
    (message,) = write({"timestamp": T0 + timedelta(microseconds=250), "stream": False})
    (whole_second,) = write({"timestamp": T0 + timedelta(minutes=9)})

    listed = api.get("/messages").json()["messages"]

    assert listed == [
        whole_second.as_json(content=True),
        Message.objects.get(pk=message.pk).as_json(content=True),
    ]
    assert [row["timestamp"] for row in listed] == [
        "2026-03-02T12:09:00Z",
        "2026-03-02T12:00:00.000250Z",
    ]


def test_aggregations_by_backend_read_the_messages(api, catalogue):
    """Rollups have no backend column: a backend criterion counts from the messages."""
    figures = api.get("/aggregations", params={"backend": "gpu-2:11434"}).json()

    assert figures["source"] == "messages"
    assert figures["total_messages"] == 1
