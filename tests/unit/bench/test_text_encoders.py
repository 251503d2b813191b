"""bench.bench_text_encoders: the candidate is served beside the shipped text model from the rendered
local repository, under its own name and without the output it lacks."""

from __future__ import annotations

from pathlib import Path

from bench.bench_text_encoders import CANDIDATE, add_candidate
from emomesh.triton_repo import RenderOptions, render_repository
from services.text.config import DEFAULT_MODEL


def test_the_candidate_gets_the_shipped_models_config_under_its_own_name(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    render_repository(repo, RenderOptions("local", ort_threads=1))
    candidate = tmp_path / "mpnet-untrained"
    candidate.mkdir()
    (candidate / "model.onnx").write_bytes(b"onnx")
    add_candidate(repo, candidate)
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == sorted([DEFAULT_MODEL, CANDIDATE])
    shipped = (repo / DEFAULT_MODEL / "config.pbtxt").read_text()
    config = (repo / CANDIDATE / "config.pbtxt").read_text()
    assert f'name: "{CANDIDATE}"' in config and DEFAULT_MODEL not in config
    assert '"valence_arousal"' in shipped and '"valence_arousal"' not in config
    assert 'name: "probabilities"' in config
    assert '"emomesh_model_version" value: { string_value: "mpnet-untrained" }' in config
    assert (repo / CANDIDATE / "1" / "model.onnx").resolve() == (candidate / "model.onnx").resolve()
    assert (repo / DEFAULT_MODEL / "1" / "model.onnx").resolve() != (candidate / "model.onnx").resolve()
