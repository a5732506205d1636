"""Alert rules, their Kubernetes wrapper and the Grafana dashboard stay valid and true to /metrics.

promtool (Debian's `prometheus` package) checks and unit-tests the rules and parses every dashboard
query. Without promtool these tests skip with a reason; CI's prometheus stage installs it and runs
them with REQUIRE_PROMTOOL=1, where a missing promtool fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram

from service import metrics

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
RULE_WRAPPER = ROOT / "deploy" / "components" / "prometheusrule" / "prometheusrule.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "flask-auth0-api.json"
OPERATIONS = ROOT / "docs" / "operations.md"

#: Alerts the service promises (docs/operations.md explains each).
PROMISED_ALERTS = {
    "JWKSRefreshFailing",
    "KeysUnavailable",
    "AuthDenyRatioHigh",
    "MetricsTargetDown",
    "AuthDecisionLatencyHigh",
    "HTTP5xxRatioHigh",
    "DPoPReplayStoreErrors",
}
#: Series Prometheus itself adds to every scrape or evaluation.
_PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}
#: Grafana's variables, replaced by values promtool accepts (rate intervals, regex selections).
_GRAFANA_INTERVALS = re.compile(r"\$(?:__rate_interval|__interval|__range)\b")
_GRAFANA_VARIABLES = re.compile(r"\$\{?\w+\}?")
_PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan",
}


def exported_series() -> set[str]:
    """Every sample name the service's /metrics can contain."""
    names: set[str] = set()
    for collector in vars(metrics).values():
        if isinstance(collector, (Counter, Gauge, Histogram)):
            for family in collector.describe():
                names.update(family.name + suffix for suffix in _SAMPLE_SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )
    found = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.groups()
        if call is None and name not in _PROMQL_KEYWORDS:
            found.add(name)
    return found


def alert_rules() -> list[dict[str, Any]]:
    """Every rule in alerts.yml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard's panels, Grafana variables substituted."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in _walk_panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    return [_GRAFANA_VARIABLES.sub(".+", _GRAFANA_INTERVALS.sub("5m", e)) for e in exprs]


def promtool() -> str:
    """promtool's path; skip (or fail under REQUIRE_PROMTOOL=1) when it is not installed."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is required here (REQUIRE_PROMTOOL=1) but not installed")
        pytest.skip("promtool not installed (apt-get install prometheus); CI's prometheus stage runs this")
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool with a time limit, capturing its output."""
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def check_queries_parse(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on the expressions written as recording rules."""
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return run_promtool("check", "rules", str(path))


def test_alert_rules_pass_promtool_check() -> None:
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass() -> None:
    """alerts.test.yml: the series fed make exactly the expected alerts fire."""
    result = run_promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    """The unit tests pin the thresholds: a rule file with a looser one fails them."""
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    (tmp_path / ALERTS.name).write_text(ALERTS.read_text().replace("> 1200", "> 3600"))
    result = run_promtool("test", "rules", str(tmp_path / ALERT_TESTS.name))
    assert result.returncode != 0 and "JWKSRefreshFailing" in result.stdout + result.stderr


def test_every_promised_alert_exists_is_tested_and_documented() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= PROMISED_ALERTS, PROMISED_ALERTS - names
    tested = {t["alertname"] for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", [])}
    assert tested == names
    doc = OPERATIONS.read_text()
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert f"### {rule['alert']}" in doc and anchor == rule["alert"].lower(), rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket")


def test_alert_rules_name_only_exported_metrics() -> None:
    exported = exported_series() | _PROMETHEUS_SERIES
    for rule in alert_rules():
        assert metric_names(rule["expr"]) <= exported, (rule["alert"], metric_names(rule["expr"]))


def test_prometheusrule_wrapper_is_generated_from_alerts_yml() -> None:
    """deploy/components/prometheusrule holds exactly alerts.yml's groups (bin/render-rules)."""
    wrapper = yaml.safe_load(RULE_WRAPPER.read_text())
    assert wrapper["kind"] == "PrometheusRule"
    assert wrapper["apiVersion"] == "monitoring.coreos.com/v1"
    assert wrapper["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
    check = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "render-rules"), "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert check.returncode == 0, "prometheusrule.yaml is stale: run bin/render-rules"


def rendered(overlay: str) -> list[dict[str, Any]]:
    """An overlay rendered by ``kubectl kustomize`` (the test skips without kubectl)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (CI's k8s stage requires it)")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "overlays" / overlay)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return [o for o in yaml.safe_load_all(out) if o]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single object of a kind."""
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def test_prod_overlay_ships_the_rules_and_dev_does_not() -> None:
    prod = one(rendered("prod"), "PrometheusRule")
    assert prod["metadata"]["namespace"] == "flask-auth0-api"
    assert prod["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
    assert not [o for o in rendered("dev") if o["kind"] == "PrometheusRule"]


def test_prod_scrapes_the_separate_metrics_port_only_from_prometheus() -> None:
    """METRICS_PORT in prod: container, Service, ServiceMonitor and NetworkPolicy agree on it."""
    objects = rendered("prod")
    port = int(one(objects, "ConfigMap")["data"]["METRICS_PORT"])
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port and ports["http"] != port
    service_ports = {p["name"]: p for p in one(objects, "Service")["spec"]["ports"]}
    assert service_ports["metrics"]["targetPort"] == "metrics"
    endpoints = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert [(e["port"], e["path"]) for e in endpoints] == [("metrics", "/metrics")]
    ingress = one(objects, "NetworkPolicy")["spec"]["ingress"]
    metrics_rules = [r for r in ingress if any(p["port"] == "metrics" for p in r["ports"])]
    assert len(metrics_rules) == 1 and metrics_rules[0].get("from"), "metrics open to everyone"
    assert [r for r in ingress if any(p["port"] == "http" for p in r["ports"])]


def test_dev_and_compose_keep_metrics_on_the_app_port() -> None:
    dev = one(rendered("dev"), "ConfigMap")["data"]
    assert dev.get("METRICS_PORT", "0") == "0"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "METRICS_PORT" not in compose["services"]["api"].get("environment", {})


def test_compose_prometheus_loads_the_alert_rules() -> None:
    """The scrape config names alerts.yml beside itself, and compose mounts it there."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    exprs = dashboard_queries()
    assert len(exprs) >= 9
    result = check_queries_parse(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_query_check_refuses_a_malformed_expression(tmp_path: Path) -> None:
    result = check_queries_parse(["sum(rate(auth_decisions_total[5m])"], tmp_path)
    assert result.returncode != 0


def test_dashboard_names_only_exported_metrics() -> None:
    exported = exported_series() | _PROMETHEUS_SERIES
    used: set[str] = set()
    for expr in dashboard_queries():
        names = metric_names(expr)
        assert names, expr
        assert names <= exported, (expr, names - exported)
        used |= names
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    for variable in variables:
        query = variable.get("definition", "")
        for name in re.findall(r"label_values\((\w+)", query):
            assert name in exported, name
    # The dashboard shows what an SRE needs first: decisions, latency, JWKS, cache, build.
    for needed in (
        "auth_decisions_total", "auth_decision_duration_seconds_bucket", "jwks_fetches_total",
        "jwks_last_success_timestamp_seconds", "jwks_keys", "token_cache_requests_total",
    ):
        assert needed in used, needed


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(auth_decision_duration_seconds_bucket{job=~"a|b"}[5m]))',
         {"auth_decision_duration_seconds_bucket"}),
        ("time() - max(jwks_last_success_timestamp_seconds > 0)", {"jwks_last_success_timestamp_seconds"}),
        ("a_total / ignoring (reason) group_left b_total offset 5m", {"a_total", "b_total"}),
        ('histogram_quantile(0.99, rate(not_ours_seconds_bucket{le="+Inf"}[1m]))',
         {"not_ours_seconds_bucket"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_unexported_names_are_caught() -> None:
    assert "not_ours_seconds_bucket" not in exported_series()
    assert {"jwks_keys", "token_cache_requests_total", "service_build_info"} <= exported_series()


def test_every_exported_metric_is_documented_with_when_to_worry() -> None:
    """docs/operations.md has a row per metric: meaning and when to worry (5 columns)."""
    rows = {
        line.split("|")[1].strip().strip("`"): line
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("| `")
    }
    for collector in vars(metrics).values():
        if isinstance(collector, (Counter, Gauge, Histogram)):
            (family,) = collector.describe()
            name = family.name + ("_total" if family.type == "counter" else "")
            assert name in rows, f"{name} missing from docs/operations.md"
            cells = [c.strip() for c in rows[name].strip().strip("|").split("|")]
            assert len(cells) == 5 and all(cells), rows[name]
