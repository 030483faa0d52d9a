"""The shipped Alertmanager configuration: amtool accepts it, and a real Alertmanager routes the
alerts of the shipped rules by severity to a webhook and an SMTP server of our own on loopback,
including an alert fired by a real Prometheus running the shipped prometheus.yml."""

import json
import queue
import shutil
import socket
import socketserver
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

pytestmark = pytest.mark.needs_binary("amtool")

GRAFANA = Path(__file__).resolve().parent.parent / "grafana"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Webhook:
    """An HTTP server that queues every notification Alertmanager posts to it."""

    def __init__(self):
        received = self.received = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """The smallest SMTP server Alertmanager's client talks to: it queues each mail's text."""

    def __init__(self):
        received = self.received = queue.Queue()

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.say("220 localhost ESMTP")
                lines, in_data = [], False
                for raw in self.rfile:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if in_data and line == ".":
                        received.put("\n".join(lines))
                        lines, in_data = [], False
                        self.say("250 queued")
                    elif in_data:
                        lines.append(line.removeprefix("."))
                    elif line.upper().startswith("DATA"):
                        in_data = True
                        self.say("354 end with .")
                    elif line.upper().startswith("QUIT"):
                        self.say("221 bye")
                        return
                    else:  # EHLO, MAIL, RCPT, RSET, NOOP
                        self.say("250 ok")

            def say(self, line: str) -> None:
                self.wfile.write(f"{line}\r\n".encode())

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def shipped_config_for(webhook: Webhook, mailbox: Mailbox) -> dict:
    """grafana/alertmanager.yml with its example endpoints replaced by ours, and no waiting."""
    config = yaml.safe_load((GRAFANA / "alertmanager.yml").read_text())
    config["global"].update(smtp_smarthost=mailbox.address, smtp_require_tls=False)
    del config["global"]["smtp_auth_username"], config["global"]["smtp_auth_password_file"]
    for route in [config["route"], *config["route"]["routes"]]:
        route["group_wait"] = "0s"
    for receiver in config["receivers"]:
        for webhook_config in receiver.get("webhook_configs", []):
            webhook_config["url"] = webhook.url
    return config


class Alertmanager:
    def __init__(self, directory: Path, config: dict):
        (directory / "alertmanager.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self.log = directory / "alertmanager.log"
        binary = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={directory / 'alertmanager.yml'}",
                    f"--storage.path={directory / 'alertmanager-data'}",
                    f"--web.listen-address={self.address}",
                    "--cluster.listen-address=",  # no gossip port: a single instance
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=f"http://{self.address}", timeout=10)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"alertmanager exited:\n{self.log.read_text()[-3000:]}")
        try:
            return self.http.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(timeout=20)


@pytest.fixture
def receivers():
    webhook, mailbox = Webhook(), Mailbox()
    yield webhook, mailbox
    webhook.stop()
    mailbox.stop()


@pytest.fixture
def alertmanager(receivers, tmp_path, wait_until):
    manager = Alertmanager(tmp_path, shipped_config_for(*receivers))
    try:
        wait_until(manager.ready, timeout=30)
        yield manager
    finally:
        manager.stop()


def shipped_rules() -> dict[str, dict]:
    rules = yaml.safe_load((GRAFANA / "ollama_alerts.yml").read_text())
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}


def drain(received: queue.Queue, count: int) -> list:
    """The next `count` deliveries, each awaited (a missing one fails after 30 s)."""
    return [received.get(timeout=30) for _ in range(count)]


def alert_names(notifications: list[dict]) -> set[str]:
    return {alert["labels"]["alertname"] for body in notifications for alert in body["alerts"]}


def test_amtool_accepts_the_shipped_configuration():
    checked = subprocess.run(
        ["amtool", "check-config", str(GRAFANA / "alertmanager.yml")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_every_severity_of_the_shipped_rules_has_a_route():
    config = yaml.safe_load((GRAFANA / "alertmanager.yml").read_text())
    routed = {
        matcher.split("=", 1)[1].strip('"')
        for route in config["route"]["routes"]
        for matcher in route["matchers"]
    }
    assert {rule["labels"]["severity"] for rule in shipped_rules().values()} == routed
    # The inhibition names real rules (a renamed rule would silently end it).
    (inhibit,) = config["inhibit_rules"]
    matchers = inhibit["source_matchers"] + inhibit["target_matchers"]
    named = {
        name for matcher in matchers for name in matcher.split("=", 1)[1].strip('~"').split("|")
    }
    assert named == {"OllamaUpstreamDown", "HighErrorRate", "HighLatency", "HighTimeToFirstToken"}
    assert named <= set(shipped_rules())


def test_alerts_reach_the_webhook_and_the_mailbox_by_severity(alertmanager, receivers):
    webhook, mailbox = receivers
    rules = shipped_rules()
    sent = ["RecordsDropped", "HighLatency", "NoTraffic"]  # critical, warning, info
    alerts = [
        {
            "labels": {"alertname": name, **rules[name]["labels"]},
            "annotations": {"summary": rules[name]["annotations"]["summary"]},
        }
        for name in sent
    ]
    assert alertmanager.http.post("/api/v2/alerts", json=alerts).status_code == 200

    # critical: e-mail and webhook; warning: e-mail only; info: webhook only.
    posted = drain(webhook.received, 2)
    assert alert_names(posted) == {"RecordsDropped", "NoTraffic"}
    assert {body["receiver"] for body in posted} == {"email-and-webhook", "webhook"}
    assert all(body["status"] == "firing" for body in posted)
    mails = drain(mailbox.received, 2)
    subjects = {line for mail in mails for line in mail.splitlines() if line.startswith("Subject:")}
    assert len(subjects) == 2
    assert any("RecordsDropped" in subject for subject in subjects)
    assert any("HighLatency" in subject for subject in subjects)
    assert all("To: ops@example.org" in mail for mail in mails)
    assert webhook.received.empty() and mailbox.received.empty()


@pytest.mark.needs_binary("prometheus")
def test_an_alert_fired_by_prometheus_with_the_shipped_config_reaches_the_webhook(
    alertmanager, receivers, tmp_path
):
    webhook, _ = receivers
    config = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    ((target,),) = [group["static_configs"] for group in config["alerting"]["alertmanagers"]]
    target["targets"] = [alertmanager.address]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{free_port()}"]}]  # nobody listens
    rules = yaml.safe_load((GRAFANA / "ollama_alerts.yml").read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "0s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    config["rule_files"] = [str(tmp_path / "rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    with (tmp_path / "prometheus.log").open("w") as log:
        prometheus = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{free_port()}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        (posted,) = drain(webhook.received, 1)
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=20)
    assert posted["receiver"] == "email-and-webhook"
    (alert,) = posted["alerts"]
    assert alert["labels"]["alertname"] == "OllamaMonitorDown"
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["instance"] == job["static_configs"][0]["targets"][0]
