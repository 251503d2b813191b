"""`emomesh eval --mode speech-transcript`: the record of one Analyze answer, the audio / fused / text
readings side by side, the report and the weight-search cache, on fake Analyze responses."""

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emomesh.evaluation.adapters import Sample
from emomesh.evaluation.metrics import ClassificationMetrics
from emomesh.evaluation.pairs import PAIRS_CACHE_FILE, pair_fields, pair_metrics, prediction_of
from emomesh.evaluation.predictors import Prediction
from emomesh.evaluation.report import summarize
from emomesh.evaluation.runner import run_eval, service_for
from emomesh.labels import LABELS, distribution_from_probs
from emotion.common.v1 import common_pb2 as S
from emotion.fusion.v1 import fusion_pb2
from services.fusion.fuse import FusionConfig, fuse
from services.fusion.weight_search import load_cache


def peaked(label: str, top: float = 0.8) -> list[float]:
    probs = [(1 - top) / (len(LABELS) - 1)] * len(LABELS)
    probs[LABELS.index(label)] = top
    return probs


def analyze_response(
    audio: str,
    text: str | None,
    text_reliability: float = 0.9,
    text_status: S.ModalityStatus = S.MODALITY_STATUS_OK,
    language: str = "en",
) -> fusion_pb2.AnalyzeResponse:
    """What Analyze answers for a speech clip: audio's and (maybe) the transcript text's results, fused
    by the real fusion arithmetic (equal weights)."""
    response = fusion_pb2.AnalyzeResponse(text_from_transcript=text is not None)
    response.modalities.append(S.ModalityResult(modality=S.MODALITY_VISION, status=S.MODALITY_STATUS_MISSING))
    audio_result = S.ModalityResult(
        modality=S.MODALITY_AUDIO,
        status=S.MODALITY_STATUS_OK,
        reliability=1.0,
        distribution=distribution_from_probs(peaked(audio, 0.5)),
    )
    response.modalities.append(audio_result)
    response.audio.distribution.CopyFrom(audio_result.distribution)
    response.audio.model.name, response.audio.model.version = "audio_acrnn", "1"
    if text is None:
        response.modalities.append(S.ModalityResult(modality=S.MODALITY_TEXT, status=S.MODALITY_STATUS_MISSING))
    else:
        text_result = S.ModalityResult(
            modality=S.MODALITY_TEXT,
            status=text_status,
            reliability=text_reliability,
            distribution=distribution_from_probs(peaked(text, 0.9)),
        )
        if text_status == S.MODALITY_STATUS_LOW_CONFIDENCE:
            text_result.detail = f"reliability {text_reliability:.2f} below 0.30 (transcript confidence ...)"
        response.modalities.append(text_result)
        response.text.language = language
        response.text.model.name, response.text.model.version = "text_minilm_emotion", "1"
        transcript = response.audio.transcript
        transcript.text, transcript.language, transcript.language_probability = "Kids are talking", language, 0.97
        transcript.avg_logprob, transcript.no_speech_prob = -0.31, 0.02
    response.fused.CopyFrom(fuse(response.modalities, FusionConfig()))
    return response


def test_the_record_of_an_answer_keeps_every_modality_and_the_transcript() -> None:
    prediction = prediction_of(analyze_response("angry", "neutral", text_reliability=0.62))
    assert prediction.model == "audio_acrnn:1"
    assert prediction.probabilities is not None
    extra = prediction.extra
    assert extra["vision"] is None
    assert np.argmax(extra["audio"]) == LABELS.index("angry") and np.argmax(extra["text"]) == LABELS.index("neutral")
    assert extra["reliability"] == {"audio": 1.0, "text": 0.62}
    assert extra["modality_status"] == {"audio": "OK", "text": "OK"}
    assert set(extra["fused_weights"]) == {"audio", "text"}
    assert extra["transcript"] == {
        "text": "Kids are talking",
        "language": "en",
        "language_probability": 0.97,
        "avg_logprob": -0.31,
        "no_speech_prob": 0.02,
    }
    assert extra["text_language"] == "en" and extra["text_model"] == "text_minilm_emotion:1"


def test_text_under_the_reliability_threshold_is_kept_with_its_reliability_and_missing_text_is_null() -> None:
    low = pair_fields(analyze_response("sad", "happy", 0.1, S.MODALITY_STATUS_LOW_CONFIDENCE))
    assert low["text"] is not None and low["reliability"]["text"] == 0.1
    assert low["modality_status"]["text"] == "LOW_CONFIDENCE" and "text" not in low["fused_weights"]
    missing = pair_fields(analyze_response("sad", None))
    assert missing["text"] is None and "text" not in missing["reliability"]
    assert missing["modality_status"]["text"] == "MISSING" and missing["text_model"] is None


def record(label: str, audio: str, text: str | None, fused: str, reliability: float = 0.9) -> dict[str, object]:
    return {
        "label": label,
        "status": "ok",
        "predicted": fused,
        "audio": peaked(audio),
        "text": None if text is None else peaked(text),
        "reliability": {"audio": 1.0} | ({} if text is None else {"text": reliability}),
        "fused_weights": {"audio": 0.5} | ({} if text is None else {"text": 0.5}),
        "transcript": {"language": "en" if text is not None else ""},
        "text_model": "text_minilm_emotion:1" if text is not None else None,
    }


def test_pair_metrics_score_audio_fused_and_text_from_the_same_answers() -> None:
    records: list[Mapping[str, Any]] = [
        record("angry", "angry", "neutral", "neutral", 0.8),  # the neutral words pulled fusion off
        record("happy", "happy", "happy", "happy", 0.6),
        record("sad", "neutral", None, "neutral"),
        record("neutral", "neutral", "neutral", "neutral", 1.0),
        {"label": "fear", "status": "error"},  # a failed call is not scored
    ]
    metrics = pair_metrics(records)
    assert metrics.clips == 4
    assert metrics.audio.accuracy == 0.75 and metrics.fused.accuracy == 0.5
    assert metrics.fused_minus_audio_accuracy == pytest.approx(-0.25)
    assert metrics.text.accuracy == 0.5 and metrics.text.without_prediction == 1
    assert metrics.text_present == 3 and metrics.text_fused == 3
    assert metrics.mean_text_reliability == pytest.approx(0.8)
    assert metrics.transcript_languages == {"en": 3, "(none)": 1}
    assert metrics.text_models == ["text_minilm_emotion:1"]


class FakeAnalyze:
    """Answers like Analyze: the audio model hears the label in the file name ('x_angry.flac'), the
    transcript's text always reads neutral (a fixed, emotionless sentence)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def predict(self, sample: Sample) -> Prediction:
        self.calls.append(sample.id)
        await asyncio.sleep(0)
        heard = Path(sample.id).stem.split("_")[-1]
        return prediction_of(analyze_response(heard, "neutral", text_reliability=0.95))

    async def close(self) -> None:
        return None


def speech_folder(root: Path) -> Path:
    root.mkdir()
    rows = ["path,label,speaker"] + [
        f"audio/{speaker}_{i}_{label}.flac,{label},ravdess_actor{speaker}"
        for speaker in ("01", "17")
        for i, label in enumerate(("angry", "happy", "sad", "neutral"))
    ]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_speech_transcript_run_reports_the_readings_side_by_side_and_writes_the_cache(tmp_path: Path) -> None:
    root = speech_folder(tmp_path / "ravdess")
    out = tmp_path / "out"
    predictor = FakeAnalyze()
    result = run_eval(root, out, speakers="17", mode="speech-transcript", predictor=predictor)
    assert len(predictor.calls) == 4
    assert result.pairs is not None
    # Audio is always right; neutral words at equal weight drag every fused answer to neutral.
    assert result.pairs.audio.accuracy == 1.0 and result.pairs.fused.accuracy == 0.25
    assert isinstance(result.metrics, ClassificationMetrics)
    assert result.metrics.accuracy == 0.25  # the run's headline is the fused answer a client gets
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "speech-transcript" and metrics["pairs"]["fused_minus_audio"]["accuracy"] == -0.75
    assert metrics["pairs"]["text_present_share"] == 1.0 and metrics["pairs"]["transcript_languages"] == {"en": 4}
    report = (out / "report.md").read_text()
    assert "| audio alone | 1.0000 |" in report and "| **fused − audio** | **-0.7500** |" in report
    assert "transcript languages (Whisper): en 4" in report
    rows = [json.loads(line) for line in (out / PAIRS_CACHE_FILE).read_text().splitlines()]
    assert len(rows) == 4 and {row["set"] for row in rows} == {"ravdess"}
    assert rows[0]["transcript"]["language"] == "en"
    cache = load_cache(out / PAIRS_CACHE_FILE)
    assert set(cache.probs) == {"audio", "text"}
    assert cache.reliability["text"].tolist() == [0.95] * 4 and cache.groups.tolist() == ["ravdess"] * 4
    summary = summarize([out])
    assert "| ravdess speakers 17 | 4 | 1.0000 | 0.2500 | -0.7500 |" in summary and "| en 4 |" in summary
    # Resumed: nothing is asked again, and the cache is rewritten from the results.
    again = FakeAnalyze()
    run_eval(root, out, speakers="17", mode="speech-transcript", predictor=again)
    assert again.calls == [] and len((out / PAIRS_CACHE_FILE).read_text().splitlines()) == 4


def test_speech_transcript_mode_needs_speech() -> None:
    assert service_for("audio", "speech-transcript") == "fusion" and service_for("audio") == "audio"
    with pytest.raises(ValueError, match="needs a speech dataset"):
        service_for("image", "speech-transcript")
    with pytest.raises(ValueError, match="unknown mode"):
        service_for("audio", "pairs")
