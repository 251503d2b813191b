"""deploy/grafana/provisioning: the datasource and dashboards are consistent with each other, with the
recording rules and with the metrics the code defines, and cover what operations needs. That every
query returns data against a real stack is tests/integration/test_observability.py."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from emomesh.paths import PROJECT_ROOT

PROVISIONING = PROJECT_ROOT / "deploy" / "grafana" / "provisioning"
DASHBOARD_FILES = sorted((PROVISIONING / "dashboards").glob("*.json"))
RECORDING_RULES = PROJECT_ROOT / "deploy" / "prometheus" / "rules" / "recording.yml"
ALERTS = PROJECT_ROOT / "deploy" / "prometheus" / "rules" / "alerts.yml"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def all_exprs() -> list[str]:
    return [t["expr"] for path in DASHBOARD_FILES for p in load(path)["panels"] for t in p.get("targets", [])]


def test_there_are_dashboards_with_unique_uids() -> None:
    uids = [load(path)["uid"] for path in DASHBOARD_FILES]
    assert len(uids) >= 2 and len(set(uids)) == len(uids)


def test_datasource_is_the_default_prometheus_with_a_fixed_uid() -> None:
    (datasource,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert (datasource["type"], datasource["uid"], datasource["isDefault"]) == ("prometheus", "prometheus", True)


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_panels_use_the_provisioned_datasource_and_defined_variables(path: Path) -> None:
    (datasource,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    dashboard = load(path)
    variables = {v["name"] for v in dashboard["templating"]["list"]} | {"__rate_interval"}
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["description"], f"{panel['title']}: say what the panel means"
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"]
            used = set(re.findall(r"\$(\w+)", target["expr"]))
            assert used <= variables, f"{panel['title']}: undefined variables {used - variables}"


def defined_series() -> set[str]:
    """The series names the Emomesh metrics produce (a counter's `_total`, a histogram's `_bucket`,
    `_count` and `_sum`...), from the metric modules of the library and of every service and the gateway."""
    importlib.import_module("emomesh.metrics")
    for path in sorted((PROJECT_ROOT / "services").glob("*/metrics.py")):
        importlib.import_module(f"services.{path.parent.name}.metrics")
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "summary": ["_count", "_sum", ""]}
    # collect() yields every family, also a labelled one that has no series yet.
    return {family.name + suffix for family in REGISTRY.collect() for suffix in suffixes.get(family.type, [""])}


def rule_exprs() -> list[str]:
    rule_files = (RECORDING_RULES, ALERTS)
    return [r["expr"] for path in rule_files for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def test_dashboards_and_rules_read_only_metrics_that_the_code_defines() -> None:
    """A renamed metric leaves a panel or an alert silently empty: every emomesh_* series they read is
    one the library, a service or the console gateway defines."""
    defined = defined_series()
    assert {"emomesh_rpc_duration_seconds_bucket", "emomesh_gateway_http_requests_total"} <= defined
    for expr in all_exprs() + rule_exprs():
        # Series names only: not recording rules (level:metric:operations) nor label values.
        without_strings = re.sub(r'"[^"]*"', '""', expr)
        for name in re.findall(r"(?<![\w:])emomesh_[a-z0-9_]+(?![\w:])", without_strings):
            assert name in defined, f"{name} is defined by no metrics module ({expr})"


def test_dashboards_read_only_recording_rules_that_exist() -> None:
    recorded = {r["record"] for g in yaml.safe_load(RECORDING_RULES.read_text())["groups"] for r in g["rules"]}
    for expr in all_exprs():
        for name in re.findall(r"[a-z_]*:[a-z0-9_:]+", expr):
            assert name in recorded, f"{name} is not a recording rule"


@pytest.mark.parametrize(
    "needed",
    [
        r"histogram_quantile\(0\.5, .*emomesh_rpc_duration_seconds_bucket",
        r"histogram_quantile\(0\.95, .*emomesh_rpc_duration_seconds_bucket",
        r"histogram_quantile\(0\.99, .*emomesh_rpc_duration_seconds_bucket",
        r"rate\(emomesh_rpc_duration_seconds_count",
        r"service:emomesh_rpc_server_errors:ratio_rate5m",
        r"nv_inference_queue_duration_us",
        r"nv_inference_compute_infer_duration_us",
        r"nv_gpu_utilization",
        r"emomesh_modality_available",
        r"emomesh_llm_request_duration_seconds_bucket",
        r"emomesh_llm_tokens_total",
        r"emomesh_triton_request_duration_seconds_bucket",
        # The console gateway (issue #19).
        r"sum by \(route, status\) \(rate\(emomesh_gateway_http_requests_total",
        r"histogram_quantile\(0\.95, sum by \(route, le\) \(rate\(emomesh_gateway_http_latency_seconds_bucket",
        r"emomesh_gateway_websockets_active",
        r"sum by \(method, code\) \(rate\(emomesh_gateway_upstream_errors_total",
    ],
)
def test_dashboards_cover(needed: str) -> None:
    assert any(re.search(needed, expr) for expr in all_exprs()), needed


def test_dashboard_provider_points_at_the_folder_that_holds_the_json() -> None:
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())["providers"]
    # Mounted as /etc/grafana/provisioning in the Grafana container, as the OpenTelemetry demo does.
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards"
    assert provider["type"] == "file"
