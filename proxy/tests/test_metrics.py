"""/metrics after real traffic: it agrees with the stored messages, stays bounded, can be locked,
and sums several worker processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from proxy.models import Message

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


class Scrape:
    """One read of /metrics, with sums over the samples that match some labels."""

    def __init__(self, text: str):
        self.text = text
        self.samples = [
            sample for family in text_string_to_metric_families(text) for sample in family.samples
        ]

    def total(self, name: str, **labels: str) -> float:
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def label_values(self, name: str, label: str) -> set[str]:
        return {sample.labels[label] for sample in self.samples if sample.name == name}

    def counts(self, name: str, *labels: str) -> Counter:
        counts = Counter()
        for sample in self.samples:
            if sample.name == name:
                counts[tuple(sample.labels[label] for label in labels)] += sample.value
        return counts


def scrape(url: str, **kwargs) -> Scrape:
    response = httpx.get(f"{url}/metrics", **kwargs)
    assert response.status_code == 200, response.text
    return Scrape(response.text)


def difference(after: Counter, before: Counter) -> Counter:
    return Counter({key: after[key] - before[key] for key in after if after[key] != before[key]})


def cancel_a_stream(url: str, path: str = "/api/generate") -> None:
    body = {"model": "llama3.2", "prompt": "Count", "stream": True}
    headers = {"X-Sim-TPS": "20", "X-Sim-Tokens": "400"}
    with (
        httpx.Client() as client,
        client.stream("POST", f"{url}{path}", json=body, headers=headers) as response,
    ):
        next(response.iter_lines())


def test_metrics_agree_with_the_messages_after_successes_errors_and_cancels(proxy, simulator):
    before = scrape(proxy.url)
    client = ollama.Client(host=proxy.url)
    client.chat(model="llama3.2", messages=QUESTION)
    list(client.chat(model="llama3.2", messages=QUESTION, stream=True))
    client.generate(model="qwen3", prompt="Hi")
    client.embed(model="all-minilm", input="Hi")
    openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused").chat.completions.create(
        model="llava", messages=QUESTION
    )
    with pytest.raises(ollama.ResponseError):
        client.generate(model="no-such-model", prompt="Hi")
    with pytest.raises(ollama.ResponseError):
        ollama.Client(host=proxy.url, headers={"X-Sim-Fail": "500"}).generate(
            model="llama3.2", prompt="Hi"
        )
    cancel_a_stream(proxy.url)
    simulator.wait_for(disconnects=1)
    client.list()
    client.ps()
    proxy.flush()
    after = scrape(proxy.url)

    messages = Message.objects.all()
    # The unknown model never succeeded, so it is `other`; every other model did first.
    stored = Counter(
        (message.model.replace("no-such-model", "other"), message.endpoint, message.status)
        for message in messages
    )
    counted = difference(
        after.counts("ollama_requests_total", "model", "endpoint", "status"),
        before.counts("ollama_requests_total", "model", "endpoint", "status"),
    )
    assert messages.count() == 8
    assert counted == stored + Counter(
        {("", "/api/tags", "success"): 1, ("", "/api/ps", "success"): 1}
    )
    assert {status for _, _, status in counted} == {"success", "error", "cancelled"}

    def delta(name: str, **labels) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    assert delta("ollama_request_duration_seconds_count") == 10
    successes = messages.filter(status="success")
    assert (
        delta("ollama_time_to_first_token_seconds_count")
        == successes.exclude(ttft_seconds=None).count()
    )
    tokens = messages.aggregate(input=Sum("input_tokens"), output=Sum("output_tokens"))
    assert delta("ollama_tokens_total", type="input") == tokens["input"]
    assert delta("ollama_tokens_total", type="output") == tokens["output"]
    assert (
        delta("ollama_tokens_total", model="llama3.2", type="output")
        == messages.filter(model="llama3.2").aggregate(total=Sum("output_tokens"))["total"]
    )
    assert (
        delta("ollama_tokens_per_second_count") == messages.exclude(tokens_per_second=None).count()
    )
    assert (
        delta("ollama_model_load_duration_seconds_count")
        == messages.exclude(load_duration_seconds=None).count()
    )
    assert delta("ollama_recorder_records_written_total") == 8
    assert after.total("ollama_requests_in_flight") == 0
    assert after.total("ollama_recorder_queue_depth") == 0
    assert after.total("ollama_recorder_database_size_bytes") > 0


def test_request_durations_sum_to_the_latencies_of_the_messages(proxy):
    before = scrape(proxy.url)
    client = ollama.Client(host=proxy.url, headers={"X-Sim-TTFT": "0.05"})
    for _ in range(3):
        client.generate(model="llama3.2", prompt="Hi")
    proxy.flush()
    after = scrape(proxy.url)

    observed = after.total("ollama_request_duration_seconds_sum") - before.total(
        "ollama_request_duration_seconds_sum"
    )
    assert observed == pytest.approx(
        Message.objects.aggregate(total=Sum("latency_seconds"))["total"]
    )
    assert observed >= 0.15


def test_it_counts_an_upstream_that_drops_a_stream_by_kind(proxy):
    before = scrape(proxy.url).total("ollama_upstream_errors_total", kind="connection")

    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(
            f"{proxy.url}/api/generate",
            json={"model": "llama3.2", "prompt": "Hi"},
            headers={"X-Sim-Fail": "drop"},
        )

    proxy.flush()
    assert scrape(proxy.url).total("ollama_upstream_errors_total", kind="connection") == before + 1
    assert Message.objects.get().status == "error"


def test_it_counts_an_unreachable_upstream_as_a_connect_error(proxy_settings, start_proxy):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        proxy_settings.OLLAMA_URL = f"http://127.0.0.1:{sock.getsockname()[1]}"
    proxy = start_proxy()
    before = scrape(proxy.url)

    assert httpx.get(f"{proxy.url}/api/tags").status_code == 502
    assert httpx.post(f"{proxy.url}/api/chat", json={"model": "llama3.2"}).status_code == 502

    proxy.flush()
    after = scrape(proxy.url)
    assert after.total("ollama_upstream_errors_total", kind="connect") == (
        before.total("ollama_upstream_errors_total", kind="connect") + 2
    )
    assert after.total("ollama_requests_total", status="error") == (
        before.total("ollama_requests_total", status="error") + 2
    )


def test_the_in_flight_gauge_counts_the_streams_being_relayed(proxy, simulator):
    body = {"model": "llama3.2", "prompt": "Count", "stream": True}
    slow = {"X-Sim-TPS": "50", "X-Sim-Tokens": "30"}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [
            pool.submit(
                httpx.post, f"{proxy.url}/api/generate", json=body, headers=slow, timeout=30
            )
            for _ in range(3)
        ]
        simulator.wait_for(in_flight=3)
        during = scrape(proxy.url).total("ollama_requests_in_flight")
        assert [future.result().status_code for future in futures] == [200] * 3

    assert during == 3
    assert scrape(proxy.url).total("ollama_requests_in_flight") == 0


def test_metrics_are_open_by_default(proxy):
    response = httpx.get(f"{proxy.url}/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "ollama_requests_in_flight" in response.text


def test_a_bearer_token_locks_the_metrics(proxy, settings):
    settings.METRICS_BEARER_TOKEN = "s3cret-token"

    assert httpx.get(f"{proxy.url}/metrics").status_code == 401
    wrong = httpx.get(f"{proxy.url}/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert "ollama_" not in wrong.text
    right = httpx.get(f"{proxy.url}/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert right.status_code == 200
    assert "ollama_requests_in_flight" in right.text


def test_basic_auth_locks_the_metrics(proxy, settings):
    settings.METRICS_BASIC_AUTH = "prometheus:pa:ss"

    refused = httpx.get(f"{proxy.url}/metrics", auth=("prometheus", "wrong"))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Basic realm="metrics"'
    assert httpx.get(f"{proxy.url}/metrics").status_code == 401
    assert httpx.get(f"{proxy.url}/metrics", auth=("prometheus", "pa:ss")).status_code == 200


def test_metrics_serve_openmetrics_and_gzip_to_a_prometheus_that_asks(proxy):
    response = httpx.get(
        f"{proxy.url}/metrics",
        headers={"Accept": "application/openmetrics-text;version=1.0.0", "Accept-Encoding": "gzip"},
    )

    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.headers["content-encoding"] == "gzip"
    assert response.text.rstrip().endswith("# EOF")


def test_a_flood_of_model_names_leaves_the_model_label_bounded(proxy_settings, start_proxy):
    proxy_settings.METRICS_MAX_MODELS = 2
    proxy = start_proxy()
    before = scrape(proxy.url)
    client = ollama.Client(host=proxy.url)
    client.generate(model="llama3.2", prompt="Hi")
    client.generate(model="qwen3", prompt="Hi")
    proxy.flush()
    client.generate(model="llava", prompt="Hi")  # a known model, but the cap is reached
    flood = [f"model-{uuid.uuid4().hex}" for _ in range(40)]
    with httpx.Client(base_url=proxy.url) as http:
        statuses = {
            http.post("/api/generate", json={"model": name, "prompt": "Hi"}).status_code
            for name in flood
        }
    client.generate(model="llama3.2", prompt="Hi")
    proxy.flush()
    after = scrape(proxy.url)

    assert statuses == {404}
    counted = difference(
        after.counts("ollama_requests_total", "model", "status"),
        before.counts("ollama_requests_total", "model", "status"),
    )
    assert counted == {
        ("llama3.2", "success"): 2,
        ("qwen3", "success"): 1,
        ("other", "success"): 1,
        ("other", "error"): 40,
    }
    assert not any(name in after.text for name in flood)
    assert "llava" not in after.label_values(
        "ollama_requests_total", "model"
    ) - before.label_values("ollama_requests_total", "model")
    assert Message.objects.filter(model__in=flood).count() == 40


def test_unknown_paths_are_folded_into_one_endpoint_label(proxy):
    before = scrape(proxy.url).counts("ollama_requests_total", "endpoint")
    for path in ("/api/nothing-here", "/api/x1", "/v1/models/llama3.2", "/api/blobs/sha256:abc"):
        httpx.get(f"{proxy.url}{path}")
    proxy.flush()

    counted = difference(scrape(proxy.url).counts("ollama_requests_total", "endpoint"), before)
    assert counted == {("other",): 2, ("/v1/models/:model",): 1, ("/api/blobs/:digest",): 1}


def test_it_emits_the_opentelemetry_genai_histograms(proxy):
    before = scrape(proxy.url)
    reply = ollama.Client(host=proxy.url).chat(model="llama3.2", messages=QUESTION)
    ollama.Client(host=proxy.url).embed(model="all-minilm", input="Hi")
    proxy.flush()
    after = scrape(proxy.url)

    def delta(name: str, **labels) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    chat = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "llama3.2"}
    assert delta("gen_ai_client_operation_duration_seconds_count", **chat, error_type="") == 1
    assert delta("gen_ai_client_token_usage_sum", **chat, gen_ai_token_type="input") == (
        reply.prompt_eval_count
    )
    assert delta("gen_ai_client_token_usage_sum", **chat, gen_ai_token_type="output") == (
        reply.eval_count
    )
    assert delta("gen_ai_server_time_to_first_token_seconds_count", **chat) == 1
    assert (
        delta(
            "gen_ai_client_operation_duration_seconds_count",
            gen_ai_operation_name="embeddings",
            gen_ai_request_model="all-minilm",
        )
        == 1
    )


def test_a_failed_genai_operation_carries_its_error_type(proxy):
    before = scrape(proxy.url)
    with pytest.raises(ollama.ResponseError):
        ollama.Client(host=proxy.url, headers={"X-Sim-Fail": "503"}).generate(
            model="llama3.2", prompt="Hi"
        )
    proxy.flush()

    labels = {"gen_ai_operation_name": "text_completion", "error_type": "503"}
    name = "gen_ai_client_operation_duration_seconds_count"
    assert scrape(proxy.url).total(name, **labels) == before.total(name, **labels) + 1


def test_the_genai_histograms_can_be_switched_off(proxy_settings, start_proxy):
    proxy_settings.METRICS_GENAI = False
    proxy = start_proxy()
    before = scrape(proxy.url)
    ollama.Client(host=proxy.url).chat(model="llama3.2", messages=QUESTION)
    proxy.flush()
    after = scrape(proxy.url)

    assert after.total("ollama_requests_total") == before.total("ollama_requests_total") + 1
    for name in (
        "gen_ai_client_operation_duration_seconds_count",
        "gen_ai_client_token_usage_count",
        "gen_ai_server_time_to_first_token_seconds_count",
    ):
        assert after.total(name) == before.total(name), name


# --- Several worker processes ----------------------------------------------------------------


def database_url() -> str:
    """The test database as a DATABASE_URL, for a server started in another process."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    password = f":{params['PASSWORD']}" if params["PASSWORD"] else ""
    return (
        f"postgres://{params['USER']}{password}@{params['HOST'] or '127.0.0.1'}:"
        f"{params['PORT'] or 5432}/{params['NAME']}"
    )


def requests_by_process(directory: Path) -> dict[str, float]:
    """ollama_requests_total as each worker wrote it into its own multiprocess file."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(path))
        counts[path.stem.split("_")[1]] = sum(
            value for key, value, *_ in values if json.loads(key)[1] == "ollama_requests_total"
        )
    return counts


@pytest.fixture
def two_workers(simulator, tmp_path, transactional_db):
    """`uvicorn --workers 2` in a subprocess, in multiprocess mode, on the test database."""
    metrics_dir = tmp_path / "multiproc"
    metrics_dir.mkdir()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(tmp_path / "data"),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "OLLAMA_URL": simulator.url,
        "SECRET_KEY": "test",
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "ollama_monitor.asgi:application", "--workers", "2",
         "--fd", str(listener.fileno()), "--log-level", "warning", "--no-access-log"],
        cwd=settings.BASE_DIR, env=env, pass_fds=[listener.fileno()],
    )  # fmt: skip
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"

    def stop() -> int:
        server.send_signal(signal.SIGTERM)
        return server.wait(timeout=30)

    try:
        yield url, metrics_dir, stop
    finally:
        if server.poll() is None:
            stop()
        listener.close()


def test_two_workers_report_the_sum_of_their_requests(two_workers, wait_until):
    url, metrics_dir, stop = two_workers

    def started_workers() -> int:
        """Workers through their startup (each has measured the database by then)."""
        return len(list(metrics_dir.glob("gauge_livemax_*.db")))

    def generate(_):
        # A new connection each time: the workers race to accept it.
        reply = httpx.post(
            f"{url}/api/generate", json={"model": "llama3.2", "prompt": "Hi"}, timeout=30
        )
        return reply.status_code

    wait_until(lambda: started_workers() == 2, timeout=30)
    sent = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        # Until both workers have served some: which one accepts is up to the kernel.
        while sent < 200 and sorted(
            count > 0 for count in requests_by_process(metrics_dir).values()
        ) != [True, True]:
            assert set(pool.map(generate, range(8))) == {200}
            sent += 8

    wait_until(lambda: Message.objects.count() == sent, timeout=30)
    by_process = requests_by_process(metrics_dir)
    assert sum(by_process.values()) == sent
    assert sorted(count > 0 for count in by_process.values()) == [True, True]
    for _ in range(4):  # whichever worker answers the scrape, it reports both
        metrics = scrape(url)
        assert metrics.total("ollama_requests_total", model="llama3.2", status="success") == sent
        assert metrics.total("ollama_recorder_records_written_total") == sent
        assert metrics.total("ollama_requests_in_flight") == 0

    assert stop() == 0
    # A stopped worker's live gauges go with it; its counters stay in the sum.
    assert not list(metrics_dir.glob("gauge_live*.db"))
    assert sum(requests_by_process(metrics_dir).values()) == sent
