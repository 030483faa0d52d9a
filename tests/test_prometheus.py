"""A real Prometheus scrapes the proxy, and every PromQL expression the dashboard and the alert
rules ship with is evaluated against it: each returns data, the values match the traffic sent,
and an alert fires when its condition is produced."""

import importlib.util
import json
import math
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import ollama
import openai
import pytest
import yaml
from django.db.models import Max, Sum

from proxy.models import Message, ModelPrice

pytestmark = [pytest.mark.needs_binary("prometheus"), pytest.mark.django_db(transaction=True)]

GRAFANA = Path(__file__).resolve().parent.parent / "grafana"
QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


def load_generator():
    """grafana/generate.py, which is a script beside the files it writes, not a package."""
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    module = sys.modules["grafana_generate"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = load_generator()


class Prometheus:
    """A Prometheus server of our own, with the shipped configuration pointed at the proxy."""

    def __init__(self, directory: Path, target: str):
        config = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
        # Fast enough for a test: scrape and evaluate every second, alerts fire without waiting.
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        # Test alerts must not reach an Alertmanager that runs on this machine.
        del config["alerting"]
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [target]}]
        rules = yaml.safe_load((GRAFANA / "ollama_alerts.yml").read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                rule["for"] = "0s"
        (directory / "rules.yml").write_text(yaml.safe_dump(rules))
        config["rule_files"] = [str(directory / "rules.yml")]
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = directory / "prometheus.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
        try:
            return self.http.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        reply = self.http.get("/api/v1/query", params=params).json()
        assert reply["status"] == "success", (expr, reply)
        return reply["data"]["result"]

    def value(self, expr: str, at: float | None = None) -> float | None:
        result = self.query(expr, at)
        return float(result[0]["value"][1]) if result else None

    def latest_scrape(self) -> float:
        return self.value('max(timestamp(up{job="ollama-monitor"}))') or 0.0

    def alerts(self) -> dict[str, str]:
        alerts = self.http.get("/api/v1/alerts").json()["data"]["alerts"]
        return {alert["labels"]["alertname"]: alert["state"] for alert in alerts}

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(timeout=20)


@pytest.fixture
def priced(transactional_db):
    """A price for every model, so each request has a cost."""
    price = ModelPrice.objects.create(
        model_pattern="*", input_usd_per_million=1000, output_usd_per_million=2000
    )
    yield price
    price.delete()  # through the ORM, so the price book of this process forgets it


@pytest.fixture
def monitored(proxy_settings, start_proxy, priced, tmp_path, wait_until):
    proxy_settings.PROXY_IDLE_TIMEOUT = 0.3  # so that a slow model load is an upstream timeout
    proxy_settings.METRICS_DATABASE_SIZE_SECONDS = 0  # measured after every batch
    proxy = start_proxy()
    prometheus = Prometheus(tmp_path, proxy.url.removeprefix("http://"))
    try:
        wait_until(prometheus.ready, timeout=30)
        wait_until(lambda: prometheus.value('up{job="ollama-monitor"}') == 1, timeout=30)
        yield proxy, prometheus
    finally:
        prometheus.stop()


def cancel_a_stream(url: str) -> None:
    body = {"model": "llama3.2", "prompt": "Count", "stream": True}
    headers = {"X-Sim-TPS": "20", "X-Sim-Tokens": "400"}
    with (
        httpx.Client() as client,
        client.stream("POST", f"{url}/api/generate", json=body, headers=headers) as response,
    ):
        next(response.iter_lines())


# What one wave of traffic is, by (model label, status).
WAVE = Counter(
    {
        ("llama3.2", "success"): 4,
        ("qwen3", "success"): 2,
        ("llava", "success"): 1,
        ("all-minilm", "success"): 1,
        ("", "success"): 1,  # /api/tags: counted, not a message, no model
        ("other", "error"): 1,  # an unknown model
        ("llama3.2", "error"): 3,  # a 500, an upstream timeout, a dropped stream
        ("llama3.2", "cancelled"): 1,
    }
)


def send_a_wave(proxy, simulator) -> None:
    client = ollama.Client(host=proxy.url)
    for _ in range(3):
        client.generate(model="llama3.2", prompt="Hi")
    list(
        ollama.Client(host=proxy.url, headers={"X-Sim-TPS": "1000"}).chat(
            model="llama3.2", messages=QUESTION, stream=True
        )
    )
    client.chat(model="qwen3", messages=QUESTION)
    client.chat(model="qwen3", messages=QUESTION)
    openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="unused").chat.completions.create(
        model="llava", messages=QUESTION
    )
    client.embed(model="all-minilm", input="Hi")
    client.list()
    with pytest.raises(ollama.ResponseError):
        client.generate(model="no-such-model", prompt="Hi")
    for fault in ({"X-Sim-Fail": "500"}, {"X-Sim-TTFT": "2"}):
        with pytest.raises(ollama.ResponseError):
            ollama.Client(host=proxy.url, headers=fault).generate(model="llama3.2", prompt="Hi")
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(
            f"{proxy.url}/api/generate",
            json={"model": "llama3.2", "prompt": "Hi"},
            headers={"X-Sim-Fail": "drop"},
        )
    disconnects = simulator.stats()["disconnects"]
    cancel_a_stream(proxy.url)
    simulator.wait_for(disconnects=disconnects + 1)
    proxy.flush()


def panel_values(prometheus, expr: str, at: float, window: str) -> list[tuple[dict, float]]:
    """A dashboard query as Grafana would send it, all models selected, over `window`."""
    promql = (
        expr.replace("$__rate_interval", window).replace("$__range", window).replace("$model", ".*")
    )
    return [
        (series["metric"], float(series["value"][1])) for series in prometheus.query(promql, at)
    ]


def test_every_dashboard_query_and_alert_rule_works_against_a_real_prometheus(
    monitored, simulator, wait_until
):
    proxy, prometheus = monitored
    total = "sum(ollama_requests_total)"
    before = prometheus.value(total) or 0

    # Wave 1 creates every series; wave 2, identical, is what the queries measure.
    send_a_wave(proxy, simulator)
    wave = sum(WAVE.values())
    wait_until(lambda: prometheus.value(total) == before + wave, timeout=30)
    start = prometheus.latest_scrape()
    first_message_of_wave_2 = (Message.objects.aggregate(last=Max("id"))["last"] or 0) + 1
    send_a_wave(proxy, simulator)
    wait_until(lambda: prometheus.value(total) == before + 2 * wave, timeout=30)
    wait_until(lambda: prometheus.alerts().get("HighErrorRate") == "firing", timeout=30)
    fired = time.time()
    wait_until(lambda: prometheus.latest_scrape() > fired, timeout=30)
    at = prometheus.latest_scrape()
    # From the last scrape before wave 2 to the last one: exactly the second wave.
    window = f"{round((at - start) * 1000) + 1}ms"
    seconds = (at - start) + 0.001

    # Every expression of the dashboard returns data, and a number.
    dashboard = json.loads((GRAFANA / "grafana_ollama_dashboard.json").read_text())
    expressions = generate.expressions(dashboard)
    assert len(expressions) > 30
    for expr in expressions:
        values = panel_values(prometheus, expr, at, window)
        assert values, f"no data: {expr}"
        assert any(not math.isnan(value) for _, value in values), f"only NaN: {expr}"

    # The values are the second wave's traffic.
    by_title = {
        panel["title"]: [target["expr"] for target in panel.get("targets", [])]
        for panel in dashboard["panels"]
    }

    def per_wave(title: str, *labels: str, index: int = 0) -> Counter:
        """A panel's rates as counts over the window, summed by some of their labels."""
        counts = Counter()
        for metric, value in panel_values(prometheus, by_title[title][index], at, window):
            if value:
                counts[tuple(metric.get(label, "") for label in labels)] += value * seconds
        return counts

    def approx(counts: Counter) -> Counter:
        return Counter({key: round(value, 1) for key, value in counts.items()})

    assert approx(per_wave("Request rate by model and status", "model", "status")) == WAVE
    assert approx(per_wave("Requests per second")) == {(): wave}
    (ratio,) = panel_values(prometheus, by_title["Error ratio"][0], at, window)
    errors = sum(count for (_, status), count in WAVE.items() if status == "error")
    assert ratio[1] == pytest.approx(errors / wave, rel=1e-3)
    assert approx(per_wave("Upstream errors by kind", "kind")) == {
        ("timeout",): 1,
        ("connection",): 1,
    }
    messages = Message.objects.filter(id__gte=first_message_of_wave_2)
    assert messages.count() == wave - 1
    tokens = per_wave("Tokens in / out", "type")
    sums = messages.aggregate(input=Sum("input_tokens"), output=Sum("output_tokens"))
    assert tokens[("input",)] == pytest.approx(sums["input"], rel=1e-3)
    assert tokens[("output",)] == pytest.approx(sums["output"], rel=1e-3)
    cost = sum(per_wave("Cost per hour by model", "model").values()) / 3600
    assert cost == pytest.approx(messages.aggregate(cost=Sum("cost_usd"))["cost"], rel=1e-3)
    assert approx(per_wave("Recorder health", index=0)) == {(): wave - 1}  # written
    assert prometheus.value("max(ollama_recorder_database_size_bytes)", at) > 0
    assert prometheus.value("sum(ollama_requests_in_flight)", at) == 0
    label_values = prometheus.http.get(
        "/api/v1/label/model/values", params={"match[]": "ollama_requests_total"}
    ).json()["data"]
    assert {"llama3.2", "qwen3", "llava", "all-minilm", "other"} <= set(label_values)

    # Every alert rule is loaded, and the measure of each returns data.
    rules = [
        rule
        for group in prometheus.http.get("/api/v1/rules").json()["data"]["groups"]
        for rule in group["rules"]
    ]
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in generate.alert_rules()}
    assert {rule["health"] for rule in rules} == {"ok"}
    for rule in rules:
        measure, _, _ = generate.split_condition(rule["query"])
        assert prometheus.query(measure, at), f"no data: {rule['name']}: {measure}"

    # The error ratio (4 of 14) is past HighErrorRate's 5 % and below OllamaUpstreamDown's half.
    expressions = {rule["name"]: rule["query"] for rule in rules}
    assert prometheus.query(expressions["HighErrorRate"], at)
    assert not prometheus.query(expressions["OllamaUpstreamDown"], at)
    assert not prometheus.query(expressions["RecordsDropped"], at)
    alerts = prometheus.alerts()
    assert alerts["HighErrorRate"] == "firing"
    assert not {"OllamaUpstreamDown", "OllamaMonitorDown", "RecordsDropped", "NoTraffic"} & set(
        alerts
    )
    assert {"alertname": "HighErrorRate", "severity": "warning"} in [
        metric for metric, _ in panel_values(prometheus, by_title["Firing alerts"][0], at, window)
    ]
