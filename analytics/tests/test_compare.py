"""/analytics/compare and /dashboard/compare/: each model's figures computed from known
messages (percentiles from the rollups' histogram buckets, by hand), the radar's axes relative
to the models shown, and who may see the page."""

from datetime import timedelta

import pytest

from analytics.models import Feedback
from analytics.schemas import Comparison

from .conftest import T0

pytestmark = pytest.mark.django_db(transaction=True)

AT = T0 + timedelta(hours=1)


@pytest.fixture
def known(write):
    """Seven messages of three models, with every figure chosen to be worked out by hand."""

    def at(second: int, **fields) -> dict:
        return {"timestamp": AT + timedelta(seconds=second), **fields}

    llama = write(
        # 100 tokens in 2 s, latency in the bucket (0.2, 0.3], TTFT in (0.075, 0.1]
        at(0, model="llama3.2", output_tokens=100, tokens_per_second=50.0, latency_seconds=0.3,
           ttft_seconds=0.1, cost_usd=0.002),
        # 300 tokens in 3 s, latency in (0.5, 0.75], TTFT in (0.15, 0.2]
        at(1, model="llama3.2", output_tokens=300, tokens_per_second=100.0, latency_seconds=0.6,
           ttft_seconds=0.2, cost_usd=0.004),
        at(2, model="llama3.2", status="error", http_status=500, output_tokens=None,
           tokens_per_second=None, latency_seconds=0.05, ttft_seconds=None, cost_usd=None),
        # Cancelled: in the speed, cost and latency, not in the success rate.
        at(3, model="llama3.2", status="cancelled", output_tokens=100, tokens_per_second=25.0,
           latency_seconds=2.5, ttft_seconds=0.3, cost_usd=0.002),
    )  # fmt: skip
    qwen = write(
        at(4, model="qwen3", output_tokens=200, tokens_per_second=20.0, latency_seconds=4.0,
           ttft_seconds=1.0, cost_usd=0.0004),
        at(5, model="qwen3", output_tokens=200, tokens_per_second=20.0, latency_seconds=6.0,
           ttft_seconds=1.0, cost_usd=0.0004),
    )  # fmt: skip
    write(
        at(6, model="all-minilm", endpoint="/api/embed", output_tokens=None,
           tokens_per_second=None, latency_seconds=0.02, ttft_seconds=0.02, cost_usd=0.0),
    )  # fmt: skip
    Feedback.give(llama[0], "app", "up")  # 1
    Feedback.give(llama[1], "app", 3)  # 0.5
    Feedback.give(qwen[0], "app", 5)  # 1
    return llama, qwen


LLAMA = {
    "model": "llama3.2",
    "messages": 4,
    "input_tokens": 80,
    "output_tokens": 500,
    "errors": 1,
    "cancelled": 1,
    "success_rate": 2 / 3,
    "tokens_per_second": 500 / 9,  # 500 tokens in 2 + 3 + 4 s
    "avg_ttft": 0.2,
    # rank 1.5 of 3: half way through (0.15, 0.2], the second non-empty bucket
    "p50_ttft": 0.175,
    # rank 2 of 4: the end of (0.2, 0.3]; 3.8 and 3.96: into (2, 3]
    "p50_latency": 0.3,
    "p95_latency": 2.8,
    "p99_latency": 2.96,
    "cost": 0.008,
    "cost_per_1k_output_tokens": 0.016,
    "ratings": 2,
    "avg_score": 0.75,
    "radar": {"speed": 1.0, "cost": 0.125, "quality": 0.75, "reliability": 2 / 3},
}
QWEN = {
    "model": "qwen3",
    "messages": 2,
    "input_tokens": 40,
    "output_tokens": 400,
    "errors": 0,
    "cancelled": 0,
    "success_rate": 1.0,
    "tokens_per_second": 20.0,
    "avg_ttft": 1.0,
    "p50_ttft": 0.875,  # rank 1 of 2: half way through (0.75, 1]
    "p50_latency": 4.0,  # the end of (3, 4]
    "p95_latency": 7.25,  # rank 1.9: 90% into (5, 7.5]
    "p99_latency": 7.45,
    "cost": 0.0008,
    "cost_per_1k_output_tokens": 0.002,
    "ratings": 1,
    "avg_score": 1.0,
    "radar": {"speed": 20 / (500 / 9), "cost": 1.0, "quality": 1.0, "reliability": 1.0},
}
MINILM = {
    "model": "all-minilm",
    "messages": 1,
    "input_tokens": 20,
    "output_tokens": 0,
    "errors": 0,
    "cancelled": 0,
    "success_rate": 1.0,
    "tokens_per_second": None,
    "avg_ttft": 0.02,
    "p50_ttft": 0.0125,
    "p50_latency": 0.0125,
    "p95_latency": 0.02375,
    "p99_latency": 0.02475,
    "cost": 0.0,
    "cost_per_1k_output_tokens": None,
    "ratings": 0,
    "avg_score": None,
    "radar": {"speed": None, "cost": None, "quality": None, "reliability": 1.0},
}


def exactly(expected: dict):
    """The figures, floats to 1e-9 (sums taken in another order differ in the last bits)."""
    return {
        name: (
            exactly(value)
            if isinstance(value, dict)
            else pytest.approx(value, rel=1e-9)
            if isinstance(value, float)
            else value
        )
        for name, value in expected.items()
    }


def test_each_model_has_its_figures_and_radar_busiest_first(api, known):
    response = api.get("/compare", params={"start_time": AT.isoformat()})

    assert response.status_code == 200, response.text
    body = response.json()
    assert Comparison.model_validate(body).model_dump(mode="json") == body
    assert body["source"] == "rollups"
    assert body["axes"] == ["speed", "cost", "quality", "reliability"]
    assert body["models"] == [exactly(LLAMA), exactly(QWEN), exactly(MINILM)]


def test_the_figures_from_the_messages_equal_those_from_the_rollups(api, known):
    scanned = api.get("/compare", params={"user": "alice"}).json()  # no rollup column: a scan

    assert scanned["source"] == "messages"
    assert scanned["models"] == [exactly(LLAMA), exactly(QWEN), exactly(MINILM)]


def test_the_radar_is_relative_to_the_models_shown_in_the_order_asked(api, known):
    [qwen] = api.get("/compare", params={"models": "qwen3"}).json()["models"]
    both = api.get("/compare", params=[("models", "qwen3"), ("models", "llama3.2")]).json()

    assert qwen["radar"] == {"speed": 1.0, "cost": 1.0, "quality": 1.0, "reliability": 1.0}
    assert [row["model"] for row in both["models"]] == ["qwen3", "llama3.2"]
    assert both["models"][1]["radar"] == exactly(LLAMA["radar"])


def test_the_time_range_and_filters_choose_the_messages(api, known):
    # From the second llama message: the first (and its thumbs up) is left out.
    later = {"start_time": (AT + timedelta(seconds=1)).isoformat(), "models": "llama3.2"}
    [llama] = api.get("/compare", params=later).json()["models"]
    rated = api.get("/compare", params={"min_score": "0.75"}).json()["models"]

    assert (llama["messages"], llama["output_tokens"], llama["ratings"]) == (3, 400, 1)
    assert llama["avg_score"] == 0.5
    assert llama["success_rate"] == 0.5
    assert [(row["model"], row["messages"], row["avg_score"]) for row in rated] == [
        ("llama3.2", 1, 1.0),
        ("qwen3", 1, 1.0),
    ]


def test_a_model_without_messages_is_left_out_and_at_most_eight_are_asked(api, known):
    assert api.get("/compare", params={"models": "mistral"}).json()["models"] == []
    too_many = api.get("/compare", params=[("models", f"m{n}") for n in range(9)])
    assert too_many.status_code == 422


def test_the_page_needs_the_read_permission(client, reader):
    assert client.get("/dashboard/compare/")["Location"].startswith("/admin/login/")
    reader("visitor")
    assert client.get("/dashboard/compare/").status_code == 403


def test_the_page_offers_the_models_and_is_linked_from_the_dashboard(reader, known):
    client = reader("analyst", "view_message")

    page = client.get("/dashboard/compare/", {"models": "qwen3"}).content.decode()

    assert 'value="qwen3" checked' in page
    assert 'value="llama3.2">' in page
    assert 'id="chart-radar"' in page
    assert "/static/vendor/chartjs/chart.umd.js" in page
    assert "relative to the best of the models shown" in page
    assert 'href="/dashboard/compare/"' in client.get("/dashboard/").content.decode()
