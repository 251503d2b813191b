"""The runner with a scripted predictor: resumable results, failures, subsampling and the report."""

import asyncio
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from emomesh.evaluation.adapters import Sample, image_folder, subsample
from emomesh.evaluation.metrics import ClassificationMetrics, RegressionMetrics
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
    assert isinstance(result.metrics, ClassificationMetrics)
    assert result.failed == 1 and result.metrics.total == 4
    assert result.metrics.accuracy == pytest.approx(2 / 4)
    assert result.model == "fake:1"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["face_crops"] is True and metrics["without_prediction"] == 1
    report = (out / "report.md").read_text()
    assert "accuracy: **0.5000**" in report and "| surprise | 0 | 0 | 0 | 1 | 0 | 0 | 0 | 0 |" in report
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class KeywordTextPredictor:
    """Text predictions from keywords: 'great' -> happy, 'awful' -> sad, 'later' fails, else neutral."""

    async def predict(self, sample: Sample) -> Prediction:
        assert sample.text is not None
        if "later" in sample.text:
            raise ValueError("simulated bad input")
        probs = [0.0] * len(LABELS)
        label = "happy" if "great" in sample.text else "sad" if "awful" in sample.text else "neutral"
        probs[LABELS.index(label)] = 1.0
        return Prediction(probs, "words:1")

    async def close(self) -> None:
        return None


def test_run_eval_scores_one_split_of_a_text_csv(tmp_path: Path) -> None:
    csv_path = tmp_path / "smp" / "labels.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(
        "split,id,text,label\ntrain,1,great news,happy\ntrain,2,awful,sad\ntrain,3,ok then,angry\n"
        "train,4,see you later,fear\neval,1,great,happy\n"
    )
    result = run_eval(csv_path, tmp_path / "out", split="train", predictor=KeywordTextPredictor())
    assert isinstance(result.metrics, ClassificationMetrics)
    # 1 and 2 right, 3 (angry) predicted neutral, 4 failed: not scored; eval/1 is not in the split.
    assert result.failed == 1 and result.metrics.total == 3
    assert result.metrics.accuracy == pytest.approx(2 / 3)
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["train/1", "train/2", "train/3", "train/4"]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["adapter"] == "text-csv" and metrics["modality"] == "text"


def test_run_eval_scores_mosi_sentiment(tmp_path: Path) -> None:
    csv_path = tmp_path / "mosi.csv"
    csv_path.write_text("text,label\ngreat film,2.0\nawful plot,-2.0\nfine,0.4\nsee you later,1.0\n")
    result = run_eval(csv_path, tmp_path / "out", adapter="mosi", predictor=KeywordTextPredictor())
    assert result.task == "sentiment" and result.failed == 1
    # Predictions 3, -3, 0 for truths 2, -2, 0.4: MAE (1 + 1 + 0.4) / 3; Acc-2 on all three non-zero
    # truths (0 is not positive); Acc-7: 3 vs 2, -3 vs -2 wrong, 0 vs 0 right.
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["task"] == "sentiment" and metrics["adapter"] == "mosi"
    assert metrics["mae"] == pytest.approx(2.4 / 3)
    assert metrics["acc2"] == pytest.approx(2 / 3) and metrics["acc7"] == pytest.approx(1 / 3)
    assert "| MAE | Pearson | Acc-2" in (tmp_path / "out" / "report.md").read_text()


def test_run_eval_scores_valence_arousal_with_ccc(tmp_path: Path) -> None:
    csv_path = tmp_path / "va.csv"
    csv_path.write_text("id,text,valence,arousal\n1,great,8,6\n2,awful,2,3\n3,plain,5,1\n")
    result = run_eval(
        csv_path, tmp_path / "out", adapter="valence-arousal", value_range=(1, 9), predictor=KeywordTextPredictor()
    )
    assert result.task == "regression"
    assert isinstance(result.metrics, RegressionMetrics)
    # happy -> (0.8, 0.5), sad -> (-0.7, -0.4), neutral -> (0, 0); truths rescaled from 1..9.
    valence = result.metrics.dimensions["valence"]
    assert valence["mae"] == pytest.approx((abs(0.75 - 0.8) + abs(-0.75 + 0.7) + 0) / 3)
    assert valence["n"] == 3 and valence["ccc"] > 0.9
    assert "| valence | 3 |" in (tmp_path / "out" / "report.md").read_text()


class DimensionalTextPredictor(KeywordTextPredictor):
    """As KeywordTextPredictor, plus the model's own valence/arousal (a constant here)."""

    async def predict(self, sample: Sample) -> Prediction:
        prediction = await super().predict(sample)
        return Prediction(prediction.probabilities, "dims:1", {"dimensions": {"valence": 0.25, "arousal": -0.5}})


def test_valence_arousal_uses_the_models_own_dimensions_and_reads_emobank_as_it_is(tmp_path: Path) -> None:
    # EmoBank's own file: columns id, split, V, A, D, text; 1-5 ratings.
    csv_path = tmp_path / "emobank.csv"
    csv_path.write_text("id,split,V,A,D,text\na,dev,4,2,3,great\nb,dev,2,2,3,awful\nc,train,3,3,3,plain\n")
    result = run_eval(
        csv_path,
        tmp_path / "out",
        adapter="valence-arousal",
        split="dev",
        value_range=(1, 5),
        predictor=DimensionalTextPredictor(),
    )
    assert isinstance(result.metrics, RegressionMetrics)
    valence, arousal = result.metrics.dimensions["valence"], result.metrics.dimensions["arousal"]
    assert valence["n"] == arousal["n"] == 2
    # Truths (x - 3) / 2: valence 0.5 and -0.5, arousal -0.5 twice; predictions the constant 0.25 / -0.5.
    assert valence["mae"] == pytest.approx((0.25 + 0.75) / 2)
    assert arousal["mae"] == pytest.approx(0.0)


def test_run_eval_on_an_audio_folder_with_held_out_speakers(tmp_path: Path) -> None:
    root = tmp_path / "ravdess"
    root.mkdir()
    rows = ["path,label,speaker"] + [
        f"audio/{speaker}_{label}.flac,{label},ravdess_actor{speaker}"
        for speaker in ("01", "17", "18")
        for label in ("happy", "sad")
    ]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    predictor = ScriptedPredictor()
    result = run_eval(root, tmp_path / "out", speakers="17-20", predictor=predictor)
    assert sorted(predictor.calls) == [f"audio/{s}_{label}.flac" for s in ("17", "18") for label in ("happy", "sad")]
    assert isinstance(result.metrics, ClassificationMetrics)
    assert result.metrics.accuracy == 1.0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["adapter"] == "audio-folder" and metrics["modality"] == "audio" and metrics["face_crops"] is None
    assert metrics["dataset"] == "ravdess speakers 17-20"


def test_results_of_another_model_show_in_the_report(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", ROWS[:2])
    out = tmp_path / "out"
    run_eval(root, out, predictor=ScriptedPredictor())
    # The service now serves another model: a resumed run would mix them, and says so.
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text(lines[0].replace("fake:1", "fake:2") + "\n" + lines[1] + "\n")
    assert run_eval(root, out, predictor=ScriptedPredictor()).model == "fake:1, fake:2"
    assert run_eval(root, out, predictor=ScriptedPredictor(), resume=False).model == "fake:1"
