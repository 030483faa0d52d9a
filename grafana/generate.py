"""Builds grafana_ollama_dashboard.json from the panel list below and the alert rules.

Run it after changing a panel or a rule: `.venv/bin/python grafana/generate.py`.
tests/test_grafana.py fails when the committed JSON is not what this module makes.

The dashboard is built with Grafana's own grafana-foundation-sdk. Its Prometheus datasource is
a dashboard variable, `DS_PROMETHEUS`, so the same file works imported by hand (Dashboards →
Import) and provisioned from files; `model` filters most panels. The "Alert conditions" row has
one panel per rule of ollama_alerts.yml: the rule's measure and its threshold.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
DASHBOARD_PATH = HERE / "grafana_ollama_dashboard.json"
ALERTS_PATH = HERE / "ollama_alerts.yml"

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${DS_PROMETHEUS}")
MODEL = 'model=~"$model"'
RATE = "[$__rate_interval]"


@dataclass
class Target:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass
class Panel:
    kind: str  # "timeseries", "stat" or "table"
    title: str
    description: str
    targets: list[Target]
    unit: str = "short"
    width: int = 12
    height: int = 8
    thresholds: list[tuple[float, str]] = field(default_factory=list)


def quantiles(metric: str, by: str, labels: str = MODEL, levels=(0.5, 0.95, 0.99)) -> list[Target]:
    return [
        Target(
            f"histogram_quantile({level}, "
            f"sum by (le{by}) (rate({metric}_bucket{{{labels}}}{RATE})))",
            f"p{round(level * 100)}" + (" {{model}}" if by else ""),
        )
        for level in levels
    ]


def ratio(numerator: str, denominator: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({numerator}) / sum{grouping} ({denominator})"


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Overview",
        [
            Panel(
                "stat",
                "Requests per second",
                "All requests through the proxy, model routes and others.",
                [Target(f"sum(rate(ollama_requests_total{{{MODEL}}}{RATE}))")],
                unit="reqps",
                width=4,
                height=4,
            ),
            Panel(
                "stat",
                "Error ratio",
                "Share of requests that ended in an error.",
                [
                    Target(
                        # `or vector(0)`: no error at all is 0 %, not "no data".
                        f'(sum(rate(ollama_requests_total{{{MODEL},status="error"}}{RATE}))'
                        f" or vector(0)) / sum(rate(ollama_requests_total{{{MODEL}}}{RATE}))"
                    )
                ],
                unit="percentunit",
                width=4,
                height=4,
                thresholds=[(0.05, "red")],
            ),
            Panel(
                "stat",
                "Latency p95",
                "95% of requests took at most this long, from the request to the last byte.",
                quantiles("ollama_request_duration_seconds", "", levels=(0.95,)),
                unit="s",
                width=4,
                height=4,
                thresholds=[(5, "red")],
            ),
            Panel(
                "stat",
                "In flight",
                "Requests being relayed to Ollama right now, all workers and instances.",
                [Target("sum(ollama_requests_in_flight)")],
                width=4,
                height=4,
            ),
            Panel(
                "stat",
                "Output tokens per second",
                "Tokens generated per second, all models together.",
                [Target(f'sum(rate(ollama_tokens_total{{{MODEL},type="output"}}{RATE}))')],
                width=4,
                height=4,
            ),
            Panel(
                "stat",
                "Alerts firing",
                "Alerts of ollama_alerts.yml firing now (Prometheus's ALERTS series).",
                [Target('count(ALERTS{alertstate="firing"}) or vector(0)')],
                width=4,
                height=4,
                thresholds=[(1, "red")],
            ),
        ],
    ),
    (
        "Traffic",
        [
            Panel(
                "timeseries",
                "Request rate by model and status",
                "Requests per second. Model names a client sent that Ollama did not know, or "
                "beyond METRICS_MAX_MODELS, are `other`; routes without a model have none.",
                [
                    Target(
                        f"sum by (model, status) (rate(ollama_requests_total{{{MODEL}}}{RATE}))",
                        "{{model}} {{status}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "timeseries",
                "Error rate by model",
                "Share of each model's requests that ended in an error.",
                [
                    Target(
                        ratio(
                            f'rate(ollama_requests_total{{{MODEL},status="error"}}{RATE})',
                            f"rate(ollama_requests_total{{{MODEL}}}{RATE})",
                            by="model",
                        ),
                        "{{model}}",
                    )
                ],
                unit="percentunit",
            ),
            Panel(
                "timeseries",
                "Request rate by endpoint",
                "Requests per second on each Ollama route; unknown paths are `other`.",
                [
                    Target(
                        f"sum by (endpoint) (rate(ollama_requests_total{{{MODEL}}}{RATE}))",
                        "{{endpoint}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "timeseries",
                "In-flight requests",
                "Requests being relayed to Ollama, per proxy instance.",
                [Target("sum by (instance) (ollama_requests_in_flight)", "{{instance}}")],
            ),
        ],
    ),
    (
        "Latency",
        [
            Panel(
                "timeseries",
                "Latency p50 / p95 / p99",
                "From the request to the last byte of the reply, measured at the proxy.",
                quantiles("ollama_request_duration_seconds", ""),
                unit="s",
            ),
            Panel(
                "timeseries",
                "Time to first token by model",
                "From the request to the first byte of a successful reply; includes model loads.",
                quantiles("ollama_time_to_first_token_seconds", ", model", levels=(0.5, 0.95)),
                unit="s",
            ),
            Panel(
                "timeseries",
                "Model load time by model",
                "Ollama's load_duration: time spent loading the model before answering.",
                quantiles("ollama_model_load_duration_seconds", ", model", levels=(0.95,)),
                unit="s",
            ),
            Panel(
                "timeseries",
                "Tokens per second by model",
                "Generation speed: mean, and the median from the histogram.",
                [
                    Target(
                        ratio(
                            f"rate(ollama_tokens_per_second_sum{{{MODEL}}}{RATE})",
                            f"rate(ollama_tokens_per_second_count{{{MODEL}}}{RATE})",
                            by="model",
                        ),
                        "mean {{model}}",
                    ),
                    *quantiles("ollama_tokens_per_second", ", model", levels=(0.5,)),
                ],
            ),
        ],
    ),
    (
        "Tokens and cost",
        [
            Panel(
                "timeseries",
                "Tokens in / out",
                "Tokens read (input) and generated (output) per second.",
                [
                    Target(
                        f"sum by (model, type) (rate(ollama_tokens_total{{{MODEL}}}{RATE}))",
                        "{{model}} {{type}}",
                    )
                ],
            ),
            Panel(
                "timeseries",
                "Cost per hour by model",
                "USD per hour, at the pace of the moment (ollama_model_costs).",
                [
                    Target(
                        f"sum by (model) (rate(ollama_model_costs_sum{{{MODEL}}}{RATE})) * 3600",
                        "{{model}}",
                    )
                ],
                unit="currencyUSD",
            ),
            Panel(
                "stat",
                "Cost in the time range",
                "USD spent on the models in the dashboard's time range.",
                [Target(f"sum(increase(ollama_model_costs_sum{{{MODEL}}}[$__range]))")],
                unit="currencyUSD",
                width=6,
            ),
            Panel(
                "stat",
                "Tokens in the time range",
                "Tokens read and generated in the dashboard's time range.",
                [
                    Target(
                        f"sum by (type) (increase(ollama_tokens_total{{{MODEL}}}[$__range]))",
                        "{{type}}",
                    )
                ],
                width=6,
            ),
            Panel(
                "timeseries",
                "Cost per request",
                "p50 and p95 of a request's cost.",
                quantiles("ollama_model_costs", "", levels=(0.5, 0.95)),
                unit="currencyUSD",
            ),
        ],
    ),
    (
        "Upstream and recorder",
        [
            Panel(
                "timeseries",
                "Upstream errors by kind",
                "Failures to reach Ollama (connect), silences longer than PROXY_IDLE_TIMEOUT "
                "(timeout) and connections lost mid-reply (connection), per second.",
                [
                    Target(
                        f"sum by (kind) (rate(ollama_upstream_errors_total{RATE}))",
                        "{{kind}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "timeseries",
                "Backends up",
                "1 while a backend (OLLAMA_URL's hosts, the admin's Backends) passes its health "
                "checks, 0 while it is out of routing; the lowest value any proxy instance sees.",
                [Target("min by (backend) (ollama_backend_up)", "{{backend}}")],
            ),
            Panel(
                "timeseries",
                "Requests by backend",
                "Requests per second each backend answered; empty: answered by the proxy "
                "itself (refusals, merged model lists).",
                [
                    Target(
                        f"sum by (backend) (rate(ollama_requests_total{{{MODEL}}}{RATE}))",
                        "{{backend}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "timeseries",
                "Recorder health",
                "Messages per second written to the database, spooled (database unavailable or "
                "queue full), replayed from the spool, and dropped (lost).",
                [
                    Target(f"sum(rate(ollama_recorder_records_{outcome}_total{RATE}))", outcome)
                    for outcome in ("written", "spooled", "replayed", "dropped")
                ],
            ),
            Panel(
                "timeseries",
                "Recorder queue depth",
                "Exchanges waiting for the recorder's writer, per proxy instance.",
                [Target("sum by (instance) (ollama_recorder_queue_depth)", "{{instance}}")],
            ),
            Panel(
                "timeseries",
                "Database size",
                "The messages database: SQLite file and WAL, or the PostgreSQL database.",
                [Target("max(ollama_recorder_database_size_bytes)", "size")],
                unit="bytes",
            ),
        ],
    ),
]

# Units of the alert rules' measures, for their panels in the "Alert conditions" row.
ALERT_UNITS = {
    "HighErrorRate": "percentunit",
    "HighLatency": "s",
    "OllamaUpstreamDown": "percentunit",
    "OllamaMonitorDown": "short",
    "RecordsSpooled": "short",
    "RecordsDropped": "short",
    "NoTraffic": "reqps",
    "HighTimeToFirstToken": "s",
    "DatabaseGrowingFast": "bytes",
}

CONDITION = re.compile(
    r"^(?P<measure>.*\S)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<threshold>[-+.\deE]+)$", re.S
)


def split_condition(expr: str) -> tuple[str, str, str]:
    """A rule's `<measure> <comparison> <threshold>` as its three parts."""
    match = CONDITION.match(expr.strip())
    if match is None:
        raise ValueError(f"not `<measure> <comparison> <threshold>`: {expr}")
    return match["measure"], match["op"], match["threshold"]


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS_PATH.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def alert_panels() -> list[Panel]:
    panels = [
        Panel(
            "table",
            "Firing alerts",
            "Alerts of ollama_alerts.yml firing now, from Prometheus's ALERTS series.",
            [Target('sum by (alertname, severity) (ALERTS{alertstate="firing"})', instant=True)],
            width=24,
            height=6,
        )
    ]
    for rule in alert_rules():
        measure, op, threshold = split_condition(rule["expr"])
        panels.append(
            Panel(
                "timeseries",
                f"{rule['alert']}: {op} {threshold}",
                f"{rule['annotations']['summary']}. The rule's measure, with its threshold as "
                f"a line; it fires after {rule.get('for', '0s')} past it.",
                [Target(" ".join(measure.split()), "{{model}}" if "model" in measure else "")],
                unit=ALERT_UNITS[rule["alert"]],
                width=8,
                thresholds=[(float(threshold), "red")],
            )
        )
    return panels


def _query(target: Target, ref_id: str) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(target.expr).ref_id(ref_id).datasource(DATASOURCE)
    if target.legend:
        query = query.legend_format(target.legend)
    if target.instant:
        query = query.instant().format(PromQueryFormat.TABLE)
    return query


def _thresholds(steps: list[tuple[float, str]]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(None, "green"), *(Threshold(value, color) for value, color in steps)])
    )


def _panel(spec: Panel, panel_id: int):
    if spec.kind == "timeseries":
        builder = (
            timeseries.Panel()
            .legend(
                common_builders.VizLegendOptions()
                .display_mode(common.LegendDisplayMode.LIST)
                .placement(common.LegendPlacement.BOTTOM)
                .show_legend(True)
            )
            .tooltip(
                common_builders.VizTooltipOptions()
                .mode(common.TooltipDisplayMode.MULTI)
                .sort(common.SortOrder.DESCENDING)
            )
            .fill_opacity(10)
        )
        if spec.thresholds:
            builder = builder.thresholds_style(
                common_builders.GraphThresholdsStyleConfig().mode(
                    common.GraphTresholdsStyleMode.LINE  # sic, the SDK's spelling
                )
            )
    elif spec.kind == "stat":
        builder = (
            stat.Panel()
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
            .graph_mode(common.BigValueGraphMode.AREA)
        )
    else:
        builder = table.Panel().show_header(True)
    builder = (
        builder.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(spec.height)
        .thresholds(_thresholds(spec.thresholds))
    )
    for index, target in enumerate(spec.targets):
        builder = builder.with_target(_query(target, chr(ord("A") + index)))
    return builder


def build() -> dict:
    """The dashboard as Grafana's JSON model."""
    board = (
        dashboard.Dashboard("Ollama Monitor")
        .uid("ollama-monitor")
        .description("Requests, latency, tokens and cost through Ollama Monitor's proxy.")
        .tags(["ollama", "llm", "ollama-monitor"])
        .editable()
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .annotation(
            dashboard.AnnotationQuery()
            .name("Firing alerts")
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("red")
            .expr('ALERTS{alertstate="firing"}')
        )
        .with_variable(
            dashboard.DatasourceVariable("DS_PROMETHEUS").label("Prometheus").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("model")
            .label("Model")
            .datasource(DATASOURCE)
            .query("label_values(ollama_requests_total, model)")
            .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    panel_id = 0
    for title, panels in [*ROWS, ("Alert conditions", alert_panels())]:
        panel_id += 1
        board = board.with_row(dashboard.Row(title).id(panel_id))
        for spec in panels:
            panel_id += 1
            board = board.with_panel(_panel(spec, panel_id))
    model = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for variable in model["templating"]["list"]:
        # The SDK gives every variable the same placeholder id, and Grafana 10 keys variables
        # by `id` when there is one: without it, by name.
        del variable["id"]
    return model


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def expressions(model: dict) -> list[str]:
    """Every PromQL expression of a dashboard: its panels' queries and its annotations."""
    queries = [
        target["expr"]
        for panel in model["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    return queries + [item["expr"] for item in model["annotations"]["list"] if item.get("expr")]


if __name__ == "__main__":
    DASHBOARD_PATH.write_text(render())
    print(f"wrote {DASHBOARD_PATH}")
