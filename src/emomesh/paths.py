"""Where the project's files are: the repository root in a checkout, or EMOMESH_HOME in an image."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("EMOMESH_HOME") or Path(__file__).resolve().parents[2])
TRITON_DIR = PROJECT_ROOT / "deploy" / "triton"
MODEL_REPOSITORY = TRITON_DIR / "models"
SAMPLES_DIR = PROJECT_ROOT / "samples"
