"""grafana/: the dashboard is what its generator makes, names only metrics the code exports, and
the Prometheus configuration and rules pass promtool."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import proxy.metrics  # noqa: F401  (registers the metrics)

GRAFANA = Path(__file__).resolve().parent.parent / "grafana"
# Series Prometheus makes itself, not the proxy.
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "or", "and", "unless"}
KEYWORDS |= {"bool", "offset", "inf", "nan"}


def load_generator():
    """grafana/generate.py, which is a script beside the files it writes, not a package."""
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    module = sys.modules["grafana_generate"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = load_generator()


def dashboard() -> dict:
    return json.loads((GRAFANA / "grafana_ollama_dashboard.json").read_text())


def rule_expressions() -> list[str]:
    return [rule["expr"] for rule in generate.alert_rules()]


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings, e.g. label values
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # label matchers and ranges
    expr = re.sub(r"\b\d[\d.]*(?:[eE][-+]?\d+)?", " ", expr)  # numbers, e.g. 5e9
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        if not rest.startswith("(") and match[0] not in KEYWORDS:
            names.add(match[0])
    return names


def exported_names() -> set[str]:
    """Every series name the code's registry can export."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, [""])
    }


def test_the_metric_name_reader_finds_selectors_and_skips_functions_and_labels():
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, model) (rate(a_bucket{model=~"$m"}[5m])))'
        " / ignoring(x) b_total or vector(0) and on (job) up == 0 * 5e9"
    ) == {"a_bucket", "b_total", "up"}


def test_every_metric_named_in_grafana_exists_in_the_code():
    named = set()
    for expr in generate.expressions(dashboard()) + rule_expressions():
        named |= metric_names(expr)

    assert {"ollama_requests_total", "ollama_request_duration_seconds_bucket"} <= named
    assert named - PROMETHEUS_OWN - exported_names() == set()


def test_every_ollama_metric_of_the_code_has_a_panel():
    named = set()
    for expr in generate.expressions(dashboard()):
        named |= {name.removesuffix("_total") for name in metric_names(expr)}
        named |= {re.sub(r"_(bucket|sum|count)$", "", name) for name in metric_names(expr)}
    families = {family.name for family in REGISTRY.collect() if family.name.startswith("ollama_")}

    assert families - named == set()


def test_the_committed_dashboard_is_what_the_generator_makes():
    committed = (GRAFANA / "grafana_ollama_dashboard.json").read_text()

    assert committed == generate.render(), "run: .venv/bin/python grafana/generate.py"


def test_every_panel_queries_the_dashboards_prometheus_variable():
    model = dashboard()
    variables = {variable["name"]: variable for variable in model["templating"]["list"]}
    panels = [panel for panel in model["panels"] if panel["type"] != "row"]

    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["model"]["query"] == "label_values(ollama_requests_total, model)"
    assert len({panel["id"] for panel in model["panels"]}) == len(model["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids) and all(ref_ids), panel["title"]


def test_every_alert_rule_has_a_summary_a_description_and_a_panel():
    titles = {panel["title"].split(":")[0] for panel in dashboard()["panels"]}
    rules = generate.alert_rules()

    assert {"HighErrorRate", "HighLatency"} <= {rule["alert"] for rule in rules}
    for rule in rules:
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["alert"] in titles


def test_the_seed_alert_rules_are_unchanged():
    rules = {rule["alert"]: rule for rule in generate.alert_rules()}

    assert " ".join(rules["HighErrorRate"]["expr"].split()) == (
        '(sum(rate(ollama_requests_total{status="error"}[5m])) / '
        "sum(rate(ollama_requests_total[5m]))) > 0.05"
    )
    assert " ".join(rules["HighLatency"]["expr"].split()) == (
        "histogram_quantile(0.95, "
        "sum by (le) (rate(ollama_request_duration_seconds_bucket[5m])) ) > 5"
    )


def test_the_provisioned_datasource_is_the_default_prometheus():
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    dashboards = yaml.safe_load((GRAFANA / "provisioning/dashboards/ollama.yml").read_text())

    (datasource,) = provisioned["datasources"]
    assert (datasource["type"], datasource["isDefault"]) == ("prometheus", True)
    assert dashboards["providers"][0]["type"] == "file"


@pytest.mark.needs_binary("promtool")
def test_promtool_accepts_the_alert_rules():
    result = subprocess.run(
        ["promtool", "check", "rules", str(GRAFANA / "ollama_alerts.yml")],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(generate.alert_rules())} rules found" in result.stdout


@pytest.mark.needs_binary("promtool")
def test_promtool_accepts_the_prometheus_configuration():
    result = subprocess.run(
        ["promtool", "check", "config", str(GRAFANA / "prometheus.yml")],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
