"""k8s/monitoring: the alert rules and the Grafana dashboard use only metrics the code exports,
the rules pass ``promtool check rules`` and fire as intended (``promtool test rules`` on
tests/deploy/alerts.test.yml), and the kustomization renders with sound references.

The exported names come from the prometheus-client registries the ingest app and the consumer
build (ingest/metrics.py, consumer/metrics.py), never from a hand-written list.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from consumer.forwarder.metrics import SpiderMetrics
from consumer.metrics import ConsumerMetrics
from ingest.metrics import IngestMetrics
from tests.deploy.k8s_refs import problems
from tests.deploy.test_k8s_refs import template_secrets
from tests.deploy.test_manifests import render

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
# Series Prometheus makes itself for every scrape target, not the code.
SCRAPE_SERIES = frozenset({"up"})

# What the exposition format appends to a family's name, by family type.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
    | {"unless", "offset", "inf", "nan", "atan2"}
)


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name ``GET /metrics`` can show for this registry."""
    return {
        family.name + suffix for family in registry.collect() for suffix in _SUFFIXES[family.type]
    }


def code_metrics() -> set[str]:
    # the Spider forwarder's metrics join the consumer's /metrics when forwarding is on
    return (
        exported_names(IngestMetrics().registry)
        | exported_names(ConsumerMetrics().registry)
        | exported_names(SpiderMetrics().registry)
    )


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (Grafana variables allowed) selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery windows
    grouping = r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    text = re.sub(grouping, "", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.:])[A-Za-z_:][\w:]*", text):
        name = match.group(0)
        if name in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword, a function or an aggregation
        names.add(name)
    return names


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["spec"]["groups"]
    return groups


def rule_exprs(groups: list[dict[str, Any]]) -> dict[str, str]:
    return {r.get("alert") or r["record"]: r["expr"] for g in groups for r in g["rules"]}


def recorded(groups: list[dict[str, Any]]) -> set[str]:
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def dashboard_exprs(dashboard: dict[str, Any]) -> dict[str, str]:
    exprs = {
        f"panel {p['id']} {t['refId']}": t["expr"]
        for p in dashboard["panels"]
        for t in p.get("targets", [])
    }
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            # label_values(metric, label): the metric is the first argument.
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["definition"])
            assert m, var["definition"]
            exprs[f"variable {var['name']}"] = m.group(1)
    return exprs


def unknown_metrics(exprs: dict[str, str], known: set[str]) -> dict[str, set[str]]:
    out = {}
    for where, expr in exprs.items():
        missing = metric_names(expr) - known
        if missing:
            out[where] = missing
    return out


def test_the_registries_are_read_not_listed() -> None:
    names = code_metrics()
    assert "ingest_requests_total" in names
    assert "leviathan_consumer_dead_lettered_total" in names
    assert "leviathan_consumer_lag" in names
    assert "leviathan_consumer_end_to_end_seconds_bucket" in names
    assert "ingest_requests" not in names  # a counter is exposed with _total only


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum(rate(ingest_requests_total{status="503", route=~"/v1/.+"}[5m]))',
            {"ingest_requests_total"},
        ),
        ("max by (partition) (leviathan_consumer_lag) > 0.8 * 1e6", {"leviathan_consumer_lag"}),
        ("a_total offset 5m / on (pod) group_left (x) b_info", {"a_total", "b_info"}),
        ('absent(up{job="x"} == 1)', {"up"}),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
        ("rec:lag:sum > 1000000", {"rec:lag:sum"}),
    ],
)
def test_metric_names_are_extracted_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_metric_the_alert_rules_use_is_exported() -> None:
    groups = rule_groups()
    known = code_metrics() | SCRAPE_SERIES | recorded(groups)
    assert unknown_metrics(rule_exprs(groups), known) == {}


def test_every_metric_the_dashboard_uses_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    known = code_metrics() | SCRAPE_SERIES
    assert unknown_metrics(dashboard_exprs(dashboard), known) == {}


def test_a_renamed_metric_is_reported() -> None:
    groups = rule_groups()
    exprs = rule_exprs(groups)
    exprs["LeviathanStorageErrors"] = exprs["LeviathanStorageErrors"].replace(
        "storage_errors_total", "storage_error_total"
    )
    known = code_metrics() | SCRAPE_SERIES | recorded(groups)
    found = unknown_metrics(exprs, known)
    assert found["LeviathanStorageErrors"] == {"leviathan_consumer_storage_error_total"}


def test_the_rules_cover_every_failure_the_operators_page_on() -> None:
    alerts = {r["alert"]: r for g in rule_groups() for r in g["rules"] if "alert" in r}
    for name in (
        "LeviathanLagOverHighWater",
        "LeviathanPartitionStalled",
        "LeviathanDeadLettersGrowing",
        "LeviathanStorageErrors",
        "LeviathanIngest503Rate",
        "LeviathanConsumerDown",
    ):
        assert name in alerts
        assert alerts[name]["labels"]["severity"] in {"warning", "critical"}
        assert alerts[name]["annotations"]["summary"]
    assert "leviathan_consumer_partition_stalled" in alerts["LeviathanPartitionStalled"]["expr"]


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "partition"} <= variables


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("LEVIATHAN_REQUIRE_SERVICES") == "1":
            pytest.fail("promtool is required in CI (apt-get install prometheus)")
        pytest.skip("promtool not installed (Debian package prometheus)")
    return tool


def test_promtool_checks_and_unit_tests_the_rules(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = tmp_path / "leviathan-rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    tests = tmp_path / "alerts.test.yml"
    shutil.copy(Path(__file__).parent / "alerts.test.yml", tests)
    for args in (["check", "rules", str(rules)], ["test", "rules", str(tests)]):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_fail_when_an_alert_is_broken(tmp_path: Path) -> None:
    """The unit tests can fail: a threshold moved past the test's series must be caught."""
    promtool = _promtool()
    groups = rule_groups()
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == "LeviathanIngest503Rate":
                rule["expr"] = rule["expr"].replace("> 0.05", "> 0.5")
    (tmp_path / "leviathan-rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(Path(__file__).parent / "alerts.test.yml", tmp_path / "alerts.test.yml")
    result = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "alerts.test.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "LeviathanIngest503Rate" in result.stdout + result.stderr


def test_the_monitoring_kustomization_renders_with_sound_references() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(MONITORING)], check=True, capture_output=True, text=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap",
        "NetworkPolicy",
        "NetworkPolicy",
        "PodMonitor",
        "PodMonitor",
        "PodMonitor",
        "PrometheusRule",
    ]
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["leviathan.json"]) == json.loads(DASHBOARD.read_text())
    # Applied next to an overlay: its namespace, its selectors and ports must match the pods.
    for overlay in ("dev", "prod"):
        together = render(overlay) + docs
        found = problems(together, template_secrets())
        if overlay == "dev":  # no query tier there: its scrape policy selects nothing, harmlessly
            found.remove("NetworkPolicy/leviathan-query-from-prometheus podSelector matches no pod")
        assert found == []
        pods = {
            d["metadata"]["name"]: d["spec"]["template"]
            for d in together
            if d["kind"] == "Deployment"
        }
        for monitor in (d for d in docs if d["kind"] == "PodMonitor"):
            name = monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
            if name not in pods:  # the read tier runs on its own only where reads go to it
                assert (overlay, name) == ("dev", "leviathan-query")
                continue
            ports = {p["name"] for c in pods[name]["spec"]["containers"] for p in c["ports"]}
            assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
