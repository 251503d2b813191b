"""The expression model's training tool (services/vision/train_fer.py) on a tiny folder of drawn faces:
the soft targets mix each face's label with its FER+ votes, augmentation keeps the served input's
scale, the served graph averages a face and its mirror image, and a one-epoch run writes an ONNX file
of the served form."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from emomesh.labels import LABELS
from services.vision.train_fer import (
    CROP,
    FER2013_WEIGHT,
    FERPLUS_COLUMNS,
    LABEL_SMOOTHING,
    SIDE,
    ExpressionCnn,
    ServedExpressionModel,
    augment,
    load_faces,
    main,
    soft_targets,
)

VOTE_COLUMNS = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"]


def drawn_face(smile: bool, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    face = np.full((SIDE, SIDE), 90, np.uint8) + rng.integers(0, 20, (SIDE, SIDE)).astype(np.uint8)
    cv2.ellipse(face, (24, 24), (18, 22), 0, 0, 360, (200,), -1)
    cv2.circle(face, (17, 19), 3, (30,), -1)
    cv2.circle(face, (31, 19), 3, (30,), -1)
    cv2.ellipse(face, (24, 32), (8, 4), 0, 0 if smile else 180, 180 if smile else 360, (30,), 2)
    return face


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """8 drawn 48x48 faces (happy and sad), labels.csv, and FER+ votes for all but the last."""
    rows, votes = [], []
    for i in range(8):
        label = "happy" if i % 2 == 0 else "sad"
        path = f"images/train/{label}/Training_{i}.jpg"
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / path), drawn_face(label == "happy", i))
        rows.append({"path": path, "label": label, "split": "train", "fer_usage": "Training", "source": "drawn"})
        if i < 7:
            counts = dict.fromkeys(VOTE_COLUMNS, 0) | {FERPLUS_COLUMNS[label]: 6, "neutral": 2, "contempt": 2}
            votes.append({"path": path, **counts})
    with (tmp_path / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "label", "split", "fer_usage", "source"])
        writer.writeheader()
        writer.writerows(rows)
    with (tmp_path / "ferplus_votes.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", *VOTE_COLUMNS])
        writer.writeheader()
        writer.writerows(votes)
    return tmp_path


def test_soft_targets_mix_the_label_with_the_votes_and_smooth(folder: Path) -> None:
    paths, faces, labels = load_faces(folder, "train")
    assert faces.shape == (8, SIDE, SIDE) and faces.dtype == np.uint8
    targets = soft_targets(folder, paths, labels)
    np.testing.assert_allclose(targets.sum(axis=1), 1, atol=1e-6)
    happy, neutral = LABELS.index("happy"), LABELS.index("neutral")
    # 6 happy and 2 neutral votes (contempt dropped): 0.75 / 0.25 of the vote part.
    expected_happy = (FER2013_WEIGHT + (1 - FER2013_WEIGHT) * 0.75) * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING / 7
    assert targets[0, happy] == pytest.approx(expected_happy)
    assert targets[0, neutral] == pytest.approx(
        (1 - FER2013_WEIGHT) * 0.25 * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING / 7
    )
    # No votes for the last face: its label alone, smoothed.
    sad = LABELS.index("sad")
    assert targets[7, sad] == pytest.approx(1 - LABEL_SMOOTHING + LABEL_SMOOTHING / 7)


def test_augmented_crops_keep_the_served_pixel_scale(folder: Path) -> None:
    _, faces, _ = load_faces(folder, "train")
    out = augment(faces, np.random.default_rng(0))
    assert out.shape == (8, 1, CROP, CROP) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255


def test_the_served_graph_averages_a_face_and_its_mirror_image() -> None:
    torch.manual_seed(0)
    served = ServedExpressionModel(ExpressionCnn()).eval()
    faces = torch.rand(3, 1, SIDE, SIDE) * 255
    with torch.no_grad():
        probs, mirrored = served(faces), served(faces.flip(3))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(probs, mirrored)


def test_one_epoch_writes_a_model_of_the_served_form(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "model" / "model.onnx"
    main(["--data", str(folder), "--out", str(out), "--epochs", "1", "--batch", "4", "--threads", "1"])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [("face_gray", [1, SIDE, SIDE])]
    (probs,) = session.run(["probabilities"], {"face_gray": np.zeros((2, 1, SIDE, SIDE), np.float32)})
    assert probs.shape == (2, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert out.with_suffix(".checkpoint.pt").exists()
