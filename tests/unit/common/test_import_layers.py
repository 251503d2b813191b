"""Imports point one way (STYLE.md habit 10): services and benches -> the shared library -> the generated
contract. The library imports no service and no bench; serving code and benches import with only what
the service images install (the runtime dependencies of pyproject.toml): no training stack (torch,
transformers, onnx, ...), no dev tool."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from emomesh.paths import PROJECT_ROOT
from tests.dependency_tree import full_tree, import_names, runtime_tree

LIBRARY = PROJECT_ROOT / "src" / "emomesh"
# Offline tools that convert, train or export models: they need the `train` extra and nothing that
# serves or benchmarks imports them.
TRAINING_TOOLS = frozenset(
    {
        "services.audio.cross_validate",
        "services.audio.model_def",
        "services.audio.train",
        "services.audio.train_whisper_head",
        # Setup-time assembly of the Whisper-encoder model (onnx; the images build it in the Triton image).
        "services.audio.whisper_encoder",
        "services.audio.whisper_model",
        "services.text.e5_import",
        # Build-time derivation of the GPU image's float text models (onnx; run by the Triton image's build).
        "services.text.float_model",
        "services.text.export",
        "services.text.train",
        "services.text.train_e5",
        "services.text.train_valence_arousal",
        "services.vision.export_blazeface",
        "services.vision.export_deepface",
        "services.vision.export_fer",
        "services.vision.finetune_fer",
        "services.vision.keras_import",
        "services.vision.tflite_import",
        "services.vision.train_fer",
    }
)


def module_name(path: Path) -> str:
    relative = path.relative_to(PROJECT_ROOT / "src" if path.is_relative_to(LIBRARY) else PROJECT_ROOT)
    return ".".join(relative.with_suffix("").parts).removesuffix(".__init__")


def python_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside functions (absolute imports only: the
    project uses no relative ones)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imports_of(folder: Path, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in python_files(folder):
        bad = sorted(n for n in imported_modules(path) if n.split(".")[0] in forbidden or n in TRAINING_TOOLS)
        if bad:
            found[str(path.relative_to(PROJECT_ROOT))] = bad
    return found


def test_the_library_imports_no_service_bench_or_training_tool() -> None:
    assert imports_of(LIBRARY, ("bench", "services")) == {}


def test_services_import_no_bench_and_serving_code_no_training_tool() -> None:
    found = imports_of(PROJECT_ROOT / "services", ("bench",))
    # A training tool may import another (finetune_fer builds on export_fer).
    serving = {path: names for path, names in found.items() if module_name(PROJECT_ROOT / path) not in TRAINING_TOOLS}
    assert serving == {}


def test_benches_import_no_training_tool() -> None:
    assert imports_of(PROJECT_ROOT / "bench", ()) == {}


def not_in_images() -> list[str]:
    """Import names of what a development checkout has and the images do not (torch, sklearn, pytest...),
    less any name a runtime distribution provides too (namespace packages such as google)."""
    runtime = import_names(runtime_tree())
    return sorted(import_names(full_tree() - runtime_tree()) - runtime)


# Run in a fresh interpreter: a finder first on sys.meta_path refuses the packages the images lack, as
# if they were not installed, then every module is imported; failures come back as JSON.
IMPORT_ALL = """
import importlib, json, sys
blocked = set(sys.argv[1].split(","))

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not installed (blocked by the test)")
        return None

sys.meta_path.insert(0, NotInstalled())
failures = {}
for module in sys.argv[2:]:
    try:
        importlib.import_module(module)
    except Exception as exc:
        failures[module] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failures))
"""


def test_serving_code_and_benches_import_with_what_the_images_install() -> None:
    blocked = not_in_images()
    assert {"torch", "transformers", "onnx", "sklearn", "pytest"} <= set(blocked)
    modules = [
        module_name(path)
        for folder in (LIBRARY, PROJECT_ROOT / "services", PROJECT_ROOT / "bench")
        for path in python_files(folder)
        if path.name != "__main__.py"
    ]
    modules = [m for m in modules if m not in TRAINING_TOOLS]
    assert "services.vision.server" in modules and "bench.run_all" in modules
    paths = [str(PROJECT_ROOT / "src"), str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, ",".join(blocked), *modules],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {}
