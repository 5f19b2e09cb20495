"""deploy/observability checked without a Prometheus or a Grafana: every metric the alert rules
and the dashboards name is exported by some service, as the right type for how it is used.

The exported names come from the real collectors: every module of tickwatch_common and of each
service is imported (nothing opens a connection at import time) and the default registry, the
one each service's ``/metrics`` serves, lists its families. A family's series are named by its
type (a counter ``x`` is ``x_total``; a histogram ``x`` is ``x_bucket``, ``x_count``, ``x_sum``).
Each PromQL expression is parsed by ``promql-parser`` (the Rust parser's Python binding, a dev
dependency): a query that does not parse fails here, not on a dashboard. Beside that: the rules
file has Prometheus's rule-group shape with ``for``, a severity, a concern and a summary and
description on each alert, and the README explains each one; every dashboard loads, has its own
uid and title, and each panel the provisioned datasource and a query; the scrape targets are the
compose services on the ports their Settings default to, which the k8s pods name too.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
PROMETHEUS = OBSERVABILITY / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
DASHBOARDS = sorted((OBSERVABILITY / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

PACKAGES = [
    "tickwatch_common",
    "tickwatch_ingestor",
    "tickwatch_alert_engine",
    "tickwatch_notifier",
    "tickwatch_portfolio",
    "tickwatch_gateway",
]
# Compose service (= scrape job) -> the Settings module and the field of its /metrics port.
METRICS_PORTS = {
    "ingestor": ("tickwatch_ingestor.settings", "ingestor_port"),
    "alert-engine": ("tickwatch_alert_engine.settings", "alert_engine_port"),
    "notifier": ("tickwatch_notifier.settings", "notifier_port"),
    "portfolio": ("tickwatch_portfolio.settings", "portfolio_port"),
    "gateway": ("tickwatch_gateway.settings", "gateway_ops_port"),
}
# Series Prometheus makes itself: a target's scrape outcome, and the alert rules' states.
PROMETHEUS_MADE = {"up": "gauge", "ALERTS": "gauge"}
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "info": ("_info",),
}
COUNTER_FUNCTIONS = {"rate", "irate", "increase", "resets"}
GAUGE_FUNCTIONS = {"delta", "deriv", "idelta", "predict_linear"}
# Grafana replaces these before a query reaches Prometheus; a range stands in for them here.
GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)\b")
SEVERITIES = {"critical", "warning"}
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}


@cache
def exported() -> dict[str, str]:
    """Every series name the services export, with the type of the family it belongs to (a
    histogram's ``_count`` is ``histogram``: it is a counter in all but name)."""
    for package in PACKAGES:
        root = importlib.import_module(package)
        for module in pkgutil.walk_packages(root.__path__, f"{package}."):
            importlib.import_module(module.name)
    series: dict[str, str] = {}
    for family in REGISTRY.collect():
        for suffix in SERIES_SUFFIXES.get(family.type, ("",)):
            series[family.name + suffix] = family.type
    return series


def series_type(name: str) -> str | None:
    return exported().get(name) or PROMETHEUS_MADE.get(name)


def parsed(expr: str) -> promql_parser.Expr:
    return promql_parser.parse(GRAFANA_RANGES.sub("5m", expr))


N = TypeVar("N", bound=promql_parser.Expr)


def nodes(tree: promql_parser.Expr, kind: type[N]) -> list[N]:
    """Every node of ``kind`` in ``tree``, depth first."""
    found: list[N] = []

    def visit(each: promql_parser.Expr) -> None:
        if isinstance(each, kind):
            found.append(each)

    promql_parser.walk(tree, pre_visit=visit)
    return found


def selectors(tree: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    return nodes(tree, promql_parser.VectorSelector)


def problems(expr: str) -> list[str]:
    """What is wrong with ``expr``'s metric names: not exported, unnamed, or a function applied
    to a type it does not fit (a rate of a gauge, a quantile of anything but buckets)."""
    tree = parsed(expr)
    found: list[str] = []
    for selector in selectors(tree):
        if selector.name is None:
            found.append(f"a selector without a metric name: {selector.matchers}")
        elif series_type(selector.name) is None:
            found.append(f"{selector.name} is exported by no service")
    for call in nodes(tree, promql_parser.Call):
        names = [s.name for arg in call.args for s in selectors(arg) if s.name is not None]
        kind = call.func.name
        for name in names:
            of = series_type(name)
            if kind in COUNTER_FUNCTIONS and of not in {"counter", "histogram", None}:
                found.append(f"{kind}() of {name}, a {of}: only counters only go up")
            if kind in GAUGE_FUNCTIONS and of not in {"gauge", None}:
                found.append(f"{kind}() of {name}, a {of}: use rate() or increase()")
            if kind == "histogram_quantile" and not name.endswith("_bucket"):
                found.append(f"histogram_quantile() of {name}, not a histogram's buckets")
    return found


def rule_groups() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in RULE_FILES:
        document = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            yield path, group


def alert_rules() -> list[dict[str, Any]]:
    return [rule for _, group in rule_groups() for rule in group["rules"]]


def dashboard(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def data_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that show a query (rows only group them)."""
    panels: list[dict[str, Any]] = []
    for panel in board["panels"]:
        panels.extend(panel.get("panels", []))
        if panel["type"] != "row":
            panels.append(panel)
    return panels


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every query of every dashboard."""
    return [
        (path.name, panel["title"], target["expr"])
        for path in DASHBOARDS
        for panel in data_panels(dashboard(path))
        for target in panel["targets"]
    ]


# ---------------------------------------------------------------------------- the metric names


def test_every_metric_a_rule_names_is_exported_as_the_type_its_functions_need() -> None:
    assert alert_rules(), f"no alert rule under {PROMETHEUS / 'rules'}"
    found = {rule["alert"]: problems(rule["expr"]) for rule in alert_rules()}
    assert {alert: wrong for alert, wrong in found.items() if wrong} == {}


def test_every_metric_a_dashboard_query_names_is_exported_as_the_type_its_functions_need() -> None:
    queries = dashboard_queries()
    assert len(queries) >= 4 * 5, "the dashboards hold fewer queries than they should"
    found = {f"{board}: {title}: {expr}": problems(expr) for board, title, expr in queries}
    assert {where: wrong for where, wrong in found.items() if wrong} == {}


def test_every_dashboard_variable_reads_an_exported_label() -> None:
    pattern = re.compile(r"^label_values\((\w+), *(\w+)\)$")
    for path in DASHBOARDS:
        for variable in dashboard(path).get("templating", {}).get("list", []):
            match = pattern.match(variable["query"]["query"])
            assert match, f"{path.name}: ${variable['name']}: not label_values(metric, label)"
            assert series_type(match[1]), f"{path.name}: ${variable['name']}: {match[1]}"


def test_the_check_refuses_an_unknown_name_a_misused_type_and_a_query_that_does_not_parse() -> None:
    assert problems("rate(tickwatch_messages_consumed_total[5m])") == []
    assert (
        problems(
            'sum(up{job="x"}) + histogram_quantile(0.9, rate(notifier_send_seconds_bucket[5m]))'
        )
        == []
    )
    assert problems("rate(tickwatch_no_such_metric_total[5m])") == [
        "tickwatch_no_such_metric_total is exported by no service"
    ]
    # A counter's family name is not a series; its samples are <name>_total.
    assert problems("tickwatch_messages_consumed") == [
        "tickwatch_messages_consumed is exported by no service"
    ]
    assert problems("rate(tickwatch_consumer_lag[5m])") == [
        "rate() of tickwatch_consumer_lag, a gauge: only counters only go up"
    ]
    assert problems("deriv(notifier_deliveries_total[5m])") == [
        "deriv() of notifier_deliveries_total, a counter: use rate() or increase()"
    ]
    assert problems("histogram_quantile(0.9, rate(notifier_send_seconds_count[5m]))") == [
        "histogram_quantile() of notifier_send_seconds_count, not a histogram's buckets"
    ]
    with pytest.raises(ValueError):
        parsed("sum(rate(notifier_deliveries_total[5m])")


# ---------------------------------------------------------------------------- the rules file


def test_the_rules_are_prometheus_rule_groups_with_for_severity_and_annotations() -> None:
    assert RULE_FILES, "no rules file"
    groups = [group["name"] for _, group in rule_groups()]
    assert len(groups) == len(set(groups)), "two rule groups share a name"
    alerts = [rule["alert"] for rule in alert_rules()]
    assert len(alerts) == len(set(alerts)), "two alerts share a name"
    concerns = {board["tags"][1] for board in map(dashboard, DASHBOARDS)} | {"platform"}
    for rule in alert_rules():
        name = rule.get("alert")
        assert name and set(rule) <= RULE_KEYS, f"{rule}: not an alerting rule"
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), name
        promql_parser.parse_duration(rule["for"])  # raises on anything but a duration
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["labels"]["concern"] in concerns, f"{name}: its concern has no dashboard"
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name


def test_the_readme_explains_every_alert_and_answers_for_every_dashboard() -> None:
    readme = (OBSERVABILITY / "README.md").read_text()
    headings = set(re.findall(r"^#+ +`?(\w+)`?", readme, re.MULTILINE))
    assert [rule["alert"] for rule in alert_rules() if rule["alert"] not in headings] == []
    assert [path.name for path in DASHBOARDS if path.name not in readme] == []


# ---------------------------------------------------------------------------- the dashboards


def test_each_dashboard_loads_with_its_own_uid_and_title_and_every_panel_queries() -> None:
    assert len(DASHBOARDS) == 4, [path.name for path in DASHBOARDS]
    boards = [dashboard(path) for path in DASHBOARDS]
    assert len({board["uid"] for board in boards}) == len(boards), "two dashboards share a uid"
    assert len({board["title"] for board in boards}) == len(boards), "two share a title"
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    expected = {"type": datasource["type"], "uid": datasource["uid"]}
    for path, board in zip(DASHBOARDS, boards, strict=True):
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: two panels share an id"
        for panel in data_panels(board):
            where = f"{path.name}: {panel['title']}"
            assert panel["datasource"] == expected, where
            assert panel["targets"], f"{where}: no query"
            for target in panel["targets"]:
                assert target["expr"].strip() and target["refId"], where
                assert target.get("datasource", expected) == expected, where
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{where}: wider than the dashboard"


def test_every_dashboard_answers_is_it_up() -> None:
    """The operator's first question on each dashboard: a panel on ``up`` of its services."""
    for path in DASHBOARDS:
        exprs = [t["expr"] for p in data_panels(dashboard(path)) for t in p["targets"]]
        named = {s.name for expr in exprs for s in selectors(parsed(expr))}
        assert "up" in named, f"{path.name} has no panel on up"


# ---------------------------------------------------------------------------- scrape and compose


def test_the_scrape_targets_are_the_compose_services_on_their_metrics_ports() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    expected = {}
    for service, (module, field) in METRICS_PORTS.items():
        settings = importlib.import_module(module).Settings
        expected[service] = [f"{service}:{settings.model_fields[field].default}"]
    assert targets == expected
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service, (_, field) in METRICS_PORTS.items():
        environment = compose["services"][service].get("environment", {})
        port = environment.get(field.upper())
        assert port is None or expected[service] == [f"{service}:{port}"], service


def test_compose_mounts_these_files_where_the_configs_read_them_on_pinned_images() -> None:
    compose = yaml.safe_load((OBSERVABILITY / "compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"prometheus", "grafana"}
    for name, service in services.items():
        _, _, tag = service["image"].rpartition(":")
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {service['image']} not pinned"
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (OBSERVABILITY / source).exists(), f"{name}: {source} missing"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    for pattern in config["rule_files"]:
        folder, _, glob = pattern.rpartition("/")
        assert sorted((OBSERVABILITY / mounts[folder]).glob(glob)) == RULE_FILES
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert services["grafana"]["ports"] == ["127.0.0.1:3000:3000"]
    # Published, so its password has no default: compose refuses to start without one.
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?"), password
    assert "ports" not in services["prometheus"]
    # Grafana reads the dashboards where they are mounted, from the Prometheus of this file.
    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    provisioning = OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "tickwatch.yml"
    [provider] = yaml.safe_load(provisioning.read_text())["providers"]
    assert grafana[provider["options"]["path"]] == "./grafana/dashboards"
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"


def test_each_k8s_pod_names_the_port_its_metrics_are_scraped_on_in_compose() -> None:
    """A Prometheus in the cluster finds each service where the compose one does."""
    for service, (module, field) in METRICS_PORTS.items():
        path = ROOT / "deploy" / "k8s" / "base" / service / "deployment.yaml"
        deployment = yaml.safe_load(path.read_text())
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        port = importlib.import_module(module).Settings.model_fields[field].default
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }, service
