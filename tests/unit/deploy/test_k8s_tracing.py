"""k8s/components/tracing: prod with the component renders, validates, and every service and the
console gateway read their environment as tracing on (the rendering helpers are test_k8s.py's)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from emomesh.config import TracingSettings
from emomesh.ports import SERVICE_PORTS
from tests.unit.deploy.test_k8s import K8S, KUBERNETES_VERSIONS, env_of, kubernetes_validate, of_kind, render


def test_tracing_component_turns_tracing_on_in_every_service(tmp_path: Path) -> None:
    # kustomize takes relative paths only, also to directories outside the kustomization's root.
    k8s = os.path.relpath(K8S, tmp_path)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"{k8s}/overlays/prod"],
        "components": [f"{k8s}/components/tracing"],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    docs = render(str(tmp_path))
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    deployments = of_kind(docs, "Deployment")
    for name in [*SERVICE_PORTS, "gateway"]:
        env = env_of(deployments[name])
        settings = TracingSettings.from_env({k: e.get("value", "from-a-reference") for k, e in env.items()})
        assert settings.exporter == "otlp" and settings.endpoint is not None, name
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert "k8s.pod.name=$(POD_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of(deployments["triton"])
    # The base denies all egress it does not name: the component opens the way to the Collector.
    policy = of_kind(docs, "NetworkPolicy")["otlp-to-collector"]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/component": "service"}
    assert policy["egress"][0]["ports"] == [{"protocol": "TCP", "port": 4317}]
    # The policy selects every pod that exports spans, the gateway's included.
    for name in [*SERVICE_PORTS, "gateway"]:
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items(), name
