"""The runner with a scripted predictor: resumable results, failures, subsampling and the report."""

import asyncio
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from emomesh.evaluation.adapters import Sample, image_folder, subsample
from emomesh.evaluation.predictors import Prediction
from emomesh.evaluation.runner import load_results, predict_all, run_eval
from emomesh.labels import LABELS


def make_folder(root: Path, rows: list[tuple[str, str, str]], side: int = 48) -> Path:
    (root / "images").mkdir(parents=True)
    lines = ["path,label,split"]
    for name, label, split in rows:
        cv2.imwrite(str(root / "images" / name), np.full((side, side), 128, np.uint8))
        lines.append(f"images/{name},{label},{split}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


class ScriptedPredictor:
    """Predicts the label written in the file name ('x_happy.png'), abstains for 'noface', fails for
    'broken' until told otherwise; counts calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail = True

    async def predict(self, sample: Sample) -> Prediction:
        self.calls.append(sample.id)
        await asyncio.sleep(0)
        stem = Path(sample.id).stem
        if "broken" in stem and self.fail:
            raise OSError("simulated read failure")
        if "noface" in stem:
            return Prediction(None, "fake:1")
        guess = stem.split("_")[-1]
        probs = [0.0] * len(LABELS)
        probs[LABELS.index(guess if guess in LABELS else "neutral")] = 1.0
        return Prediction(probs, "fake:1")

    async def close(self) -> None:
        return None


ROWS = [
    ("a_happy.png", "happy", "val"),
    ("b_sad.png", "sad", "val"),
    ("c_noface.png", "angry", "val"),
    ("d_broken.png", "fear", "val"),
    ("e_happy.png", "surprise", "val"),
    ("f_happy.png", "happy", "train"),
]


def test_adapter_reads_split_and_refuses_bad_labels(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", ROWS)
    assert [s.id for s in image_folder(root, "val")] == [f"images/{r[0]}" for r in ROWS[:5]]
    assert len(image_folder(root)) == 6
    (root / "labels.csv").write_text("path,label\nimages/a_happy.png,contempt\n")
    with pytest.raises(ValueError, match="'contempt' is not one of"):
        image_folder(root)
    (root / "labels.csv").write_text("file,label\n")
    with pytest.raises(ValueError, match="lacks the column"):
        image_folder(root)


def test_subsample_is_deterministic_and_ordered() -> None:
    samples = [Sample(str(i), "happy") for i in range(50)]
    picked = subsample(samples, 10)
    assert picked == subsample(samples, 10) and len(picked) == 10
    assert [int(s.id) for s in picked] == sorted(int(s.id) for s in picked)
    assert subsample(samples, None) == samples


async def test_results_resume_and_failures_are_retried(tmp_path: Path) -> None:
    samples = image_folder(make_folder(tmp_path / "ds", ROWS), "val")
    results = tmp_path / "out" / "results.jsonl"
    predictor = ScriptedPredictor()
    records = await predict_all(samples, predictor, results, concurrency=3)
    assert records["images/d_broken.png"]["status"] == "error"
    assert records["images/c_noface.png"]["status"] == "no_prediction"
    assert len(results.read_text().splitlines()) == 5
    # A torn last line (interrupted run) is ignored; only the failed sample is asked again.
    with results.open("a") as handle:
        handle.write('{"id": "images/a_hap')
    predictor.calls.clear()
    predictor.fail = False
    records = await predict_all(samples, predictor, results, concurrency=3)
    assert predictor.calls == ["images/d_broken.png"]
    assert records["images/d_broken.png"]["predicted"] == "neutral"
    assert set(load_results(results)) == {s.id for s in samples}


def test_run_eval_writes_the_report(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", ROWS)
    out = tmp_path / "report"
    result = run_eval(root, out, split="val", predictor=ScriptedPredictor(), concurrency=2)
    # a: happy ok; b: sad ok; c: no face (wrong); d: failed (not scored); e: surprise predicted happy.
    assert result.failed == 1 and result.metrics.total == 4
    assert result.metrics.accuracy == pytest.approx(2 / 4)
    assert result.model == "fake:1"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["face_crops"] is True and metrics["without_prediction"] == 1
    report = (out / "report.md").read_text()
    assert "accuracy: **0.5000**" in report and "| surprise | 0 | 0 | 0 | 1 | 0 | 0 | 0 | 0 |" in report
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
