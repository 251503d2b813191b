"""deploy/grafana/provisioning: the datasource and dashboards are consistent with each other, with the
recording rules, and cover what operations needs. That every query returns data against a real
stack is tests/integration/test_observability.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from emomesh.paths import PROJECT_ROOT

PROVISIONING = PROJECT_ROOT / "deploy" / "grafana" / "provisioning"
DASHBOARD_FILES = sorted((PROVISIONING / "dashboards").glob("*.json"))
RECORDING_RULES = PROJECT_ROOT / "deploy" / "prometheus" / "rules" / "recording.yml"


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
    ],
)
def test_dashboards_cover(needed: str) -> None:
    assert any(re.search(needed, expr) for expr in all_exprs()), needed


def test_dashboard_provider_points_at_the_folder_that_holds_the_json() -> None:
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())["providers"]
    # Mounted as /etc/grafana/provisioning in the Grafana container, as the OpenTelemetry demo does.
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards"
    assert provider["type"] == "file"
