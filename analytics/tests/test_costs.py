"""Costs: the writer prices each message from the admin's price table (per million tokens
and/or per second of compute); `manage.py recompute_costs` re-prices the history."""

from datetime import UTC, datetime

import ollama
import pytest
from django.core.management import call_command

from proxy.models import Message, ModelPrice

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


def chat(server, model="llama3.2") -> Message:
    ollama.Client(host=server.url).chat(model=model, messages=QUESTION)
    server.flush()
    return Message.objects.latest("id")


def test_a_message_costs_its_tokens_at_the_per_million_prices(server):
    ModelPrice.objects.create(
        model_pattern="llama3.2*", input_usd_per_million=1.5, output_usd_per_million=6
    )

    message = chat(server)

    expected = message.input_tokens * 1.5e-6 + message.output_tokens * 6e-6
    assert message.cost_usd == pytest.approx(expected)
    assert message.cost_usd > 0


def test_a_local_model_costs_its_compute_seconds(server):
    ModelPrice.objects.create(model_pattern="*", usd_per_second="0.002")

    message = chat(server)

    # Ollama's own total duration, not the time measured at the proxy.
    assert message.total_duration_seconds is not None
    assert message.cost_usd == pytest.approx(message.total_duration_seconds * 0.002)


def test_a_message_without_a_total_duration_costs_its_latency(server):
    ModelPrice.objects.create(model_pattern="*", usd_per_second="0.5")
    with pytest.raises(ollama.ResponseError):
        ollama.Client(host=server.url, headers={"X-Sim-Fail": "500"}).chat(
            model="llama3.2", messages=QUESTION
        )
    server.flush()

    message = Message.objects.get()
    assert message.total_duration_seconds is None
    assert message.cost_usd == pytest.approx(message.latency_seconds * 0.5)


def test_an_unpriced_model_has_no_cost(server):
    ModelPrice.objects.create(model_pattern="gpt-*", input_usd_per_million=5)

    assert chat(server).cost_usd is None


def test_the_first_price_by_priority_then_the_most_specific_pattern_applies(server):
    ModelPrice.objects.create(model_pattern="*", output_usd_per_million=1)
    ModelPrice.objects.create(model_pattern="LLAMA3*", output_usd_per_million=2)
    ModelPrice.objects.create(model_pattern="qwen*", output_usd_per_million=3, enabled=False)
    ModelPrice.objects.create(model_pattern="q*", output_usd_per_million=4, priority=200)

    llama = chat(server, "llama3.2")
    qwen = chat(server, "qwen3")

    assert llama.cost_usd == pytest.approx(llama.output_tokens * 2e-6)  # specific, any case
    assert qwen.cost_usd == pytest.approx(qwen.output_tokens * 1e-6)  # "q*" comes later


def test_a_price_change_applies_to_the_next_message(server):
    before = chat(server)
    ModelPrice.objects.create(model_pattern="*", output_usd_per_million=10)

    after = chat(server)

    assert before.cost_usd is None
    assert after.cost_usd == pytest.approx(after.output_tokens * 1e-5)


def test_recompute_costs_reprices_history_and_its_aggregations(api, write, capsys):
    write(
        {"model": "llama3.2", "input_tokens": 1000, "output_tokens": 2000, "cost_usd": None},
        {"model": "qwen3", "input_tokens": 10, "output_tokens": 20, "total_duration_seconds": 4.0},
    )
    ModelPrice.objects.create(
        model_pattern="llama*", input_usd_per_million=1, output_usd_per_million=2
    )
    ModelPrice.objects.create(model_pattern="qwen*", usd_per_second="0.25")

    call_command("recompute_costs")

    costs = dict(Message.objects.values_list("model", "cost_usd"))
    assert costs["llama3.2"] == pytest.approx(1000e-6 + 2000 * 2e-6)
    assert costs["qwen3"] == pytest.approx(1.0)
    assert "Repriced 2 message(s)" in capsys.readouterr().out
    figures = api.get("/aggregations").json()
    assert figures["total_cost"] == pytest.approx(1.005)
    assert figures["source"] == "rollups"


def test_recompute_costs_can_keep_to_a_time_range(write):
    old, new = write(
        {"timestamp": datetime(2026, 1, 1, tzinfo=UTC), "cost_usd": 9.0},
        {"timestamp": datetime(2026, 2, 1, tzinfo=UTC), "cost_usd": 9.0},
    )
    ModelPrice.objects.create(model_pattern="*", output_usd_per_million=0)

    call_command("recompute_costs", "--since", "2026-01-15")

    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.cost_usd, new.cost_usd) == (9.0, 0.0)
