"""Where the project's files are: the repository root in a checkout, or EMOMESH_HOME in an image."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("EMOMESH_HOME") or Path(__file__).resolve().parents[2])
TRITON_DIR = PROJECT_ROOT / "deploy" / "triton"
MODEL_REPOSITORY = TRITON_DIR / "models"
SAMPLES_DIR = PROJECT_ROOT / "samples"


def model_file(name: str, repository: Path = MODEL_REPOSITORY) -> Path:
    """The ONNX file of a model in a Triton model repository (version 1, the only one kept)."""
    return repository / name / "1" / "model.onnx"
