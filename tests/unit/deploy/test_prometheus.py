"""deploy/prometheus: configs and rules checked by the real promtool, rule unit tests run by it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from emomesh.paths import PROJECT_ROOT
from emomesh.ports import SERVICE_PORTS, TRITON_METRICS_PORT, metrics_port
from tests.tools import require_tool

PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"
K8S_BASE = PROJECT_ROOT / "k8s" / "base"
# Every process that serves Prometheus metrics on metrics_port(name): the services and the console gateway.
SCRAPED = [*SERVICE_PORTS, "gateway"]


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = require_tool("promtool", "apt-get install prometheus; scripts/setup.sh does")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, cwd=PROMETHEUS_DIR, timeout=120)


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_promtool_accepts_config(config: str) -> None:
    result = promtool("check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_rules() -> None:
    result = promtool("check", "rules", *sorted((PROMETHEUS_DIR / "rules").glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", "tests/rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a rule with bad PromQL is refused."""
    broken = tmp_path / "broken.yml"
    broken.write_text("groups: [{name: g, rules: [{record: 'a:b:c', expr: 'sum by (x (y)'}]}]\n")
    assert promtool("check", "rules", broken).returncode != 0


def jobs(config_name: str) -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((PROMETHEUS_DIR / config_name).read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def base_services() -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for path in K8S_BASE.glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] == "Service"
    }


def test_kubernetes_config_scrapes_every_service_and_triton_on_metrics_ports() -> None:
    scraped = jobs("prometheus.yml")
    assert set(scraped) == {*SCRAPED, "triton"}
    services = base_services()
    for name, job in scraped.items():
        (sd,) = job["dns_sd_configs"]
        port = TRITON_METRICS_PORT if name == "triton" else metrics_port(name)
        assert sd["port"] == port
        # The gateway's own Service is a virtual IP (one address for all pods): Prometheus resolves
        # its headless twin instead, so that every pod is scraped.
        service = "gateway-metrics" if name == "gateway" else name
        assert sd["names"] == [f"{service}.emomesh.svc.cluster.local"]
        # DNS discovery finds every pod only through a headless Service that has the port.
        spec = services[service]["spec"]
        assert spec["clusterIP"] == "None", service
        assert spec["selector"] == {"app.kubernetes.io/name": name}
        assert port in {p["port"] for p in spec["ports"]}, service


def test_local_config_matches_the_embedded_stack_default_ports() -> None:
    scraped = jobs("prometheus.local.yml")
    assert set(scraped) == {*SCRAPED, "triton"}
    for name in SCRAPED:
        targets = scraped[name]["static_configs"][0]["targets"]
        assert targets == [f"127.0.0.1:{metrics_port(name)}"]
    triton_targets = scraped["triton"]["static_configs"][0]["targets"]
    assert triton_targets == [f"127.0.0.1:{TRITON_METRICS_PORT}"]


def test_every_alert_has_a_severity_summary_and_a_rule_unit_test() -> None:
    alerts = yaml.safe_load((PROMETHEUS_DIR / "rules" / "alerts.yml").read_text())
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS_DIR / "tests" / "rules_test.yml").read_text()))
    for group in alerts["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
            assert rule["alert"] in tested, f"{rule['alert']} has no test in tests/rules_test.yml"


def test_alerts_cover_the_issue_list() -> None:
    names = {
        r["alert"]
        for g in yaml.safe_load((PROMETHEUS_DIR / "rules" / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    assert {"EmomeshHighP99Latency", "EmomeshHighErrorRatio", "TritonQueueTimeHigh", "EmomeshModalityDown"} <= names
    assert {"EmomeshTargetDown", "EmomeshGatewayHighErrorRatio"} <= names


def test_target_down_alert_watches_every_scraped_job() -> None:
    alerts = yaml.safe_load((PROMETHEUS_DIR / "rules" / "alerts.yml").read_text())
    (rule,) = [r for g in alerts["groups"] for r in g["rules"] if r["alert"] == "EmomeshTargetDown"]
    match = re.fullmatch(r'up\{job=~"([a-z|]+)"\} == 0', rule["expr"])
    assert match is not None, rule["expr"]
    assert set(match.group(1).split("|")) == set(jobs("prometheus.yml")) == set(jobs("prometheus.local.yml"))


def test_adapter_exposes_the_metric_the_triton_autoscaler_reads() -> None:
    adapter = yaml.safe_load((PROMETHEUS_DIR / "prometheus-adapter.yaml").read_text())
    (rule,) = adapter["rules"]["external"]
    recorded = {
        r["record"]
        for g in yaml.safe_load((PROMETHEUS_DIR / "rules" / "recording.yml").read_text())["groups"]
        for r in g["rules"]
    }
    assert rule["seriesQuery"] in recorded
    hpa = next(
        doc
        for doc in yaml.safe_load_all((PROJECT_ROOT / "k8s" / "base" / "triton.yaml").read_text())
        if doc["kind"] == "HorizontalPodAutoscaler"
    )
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == rule["name"]["as"]
