"""`emomesh eval --mode speech-transcript`: real speech + transcript pairs through FusionService.Analyze.

Each clip is sent to the fusion service as audio only, with `transcript_as_text` on: the audio service
classifies the voice and transcribes it (Whisper), the text service reads the clip's OWN transcript
(with the recogniser's language as its hint), and fusion discounts the words by the recogniser's
confidence and fuses. From that one response this mode scores, side by side:

- audio: the audio modality's distribution (what `--mode modality` on the audio service measures);
- fused: the fused distribution (audio + the transcript's text), the answer a client gets;
- text: the text modality's distribution, for information (a clip without one counts as no prediction).

Every record keeps each modality's probabilities, reliability and status, and the transcript (text,
language, avg_logprob, no_speech_prob), and `pairs.jsonl` (rewritten after every run from the results)
is a prediction cache in the format `services.fusion.weight_search` reads, so the fusion weights can be
re-searched on real pairs without running the stack again (docs/fusion.md)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from emomesh.evaluation.adapters import Sample
from emomesh.evaluation.metrics import ClassificationMetrics, classification_metrics
from emomesh.evaluation.predictors import Prediction
from emomesh.labels import LABELS, MODALITY_NAMES, probs_from_distribution
from emomesh.server import grpc_options
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc

MODALITY_MODE = "modality"
SPEECH_TRANSCRIPT_MODE = "speech-transcript"
# `emomesh eval --mode`: what one sample is sent to.
MODES = (MODALITY_MODE, SPEECH_TRANSCRIPT_MODE)
PAIRS_CACHE_FILE = "pairs.jsonl"
# The modalities a speech clip gives, in report order.
PAIR_MODALITIES = ("audio", "text")


def _model(info: common_pb2.ModelInfo) -> str:
    return f"{info.name}:{info.version}" if info.name else ""


def _took_part_or_gated(result: common_pb2.ModalityResult) -> bool:
    """Whether a modality's distribution is one fusion weighs: OK, or LOW_CONFIDENCE only because its
    reliability was under the service's threshold (a search at another threshold may admit it)."""
    if not result.distribution.probabilities:
        return False
    if result.status == common_pb2.MODALITY_STATUS_OK:
        return True
    return result.status == common_pb2.MODALITY_STATUS_LOW_CONFIDENCE and result.detail.startswith("reliability ")


def pair_fields(response: fusion_pb2.AnalyzeResponse) -> dict[str, Any]:
    """The record fields of one Analyze answer on a speech clip: each modality's probabilities (null
    when it gave none fusion could weigh), reliability as fused (0, "not reported", read as 1 as
    fusion does), status and the weight it got, and the transcript."""
    results = {MODALITY_NAMES[r.modality]: r for r in response.modalities}
    weights = {MODALITY_NAMES[w.modality]: round(w.weight, 6) for w in response.fused.weights}
    fields: dict[str, Any] = {"vision": None}
    reliability: dict[str, float] = {}
    status: dict[str, str] = {}
    for name in PAIR_MODALITIES:
        result = results.get(name)
        if result is None:
            fields[name] = None
            status[name] = "MISSING"
            continue
        usable = _took_part_or_gated(result)
        fields[name] = probs_from_distribution(result.distribution).tolist() if usable else None
        status[name] = common_pb2.ModalityStatus.Name(result.status).removeprefix("MODALITY_STATUS_")
        if usable:
            reliability[name] = round(result.reliability or 1.0, 6)
    transcript = response.audio.transcript
    fields.update(
        reliability=reliability,
        modality_status=status,
        fused_weights=weights,
        text_from_transcript=response.text_from_transcript,
        text_language=response.text.language or None,
        text_model=_model(response.text.model) or None,
        transcript={
            "text": transcript.text,
            "language": transcript.language,
            "language_probability": round(transcript.language_probability, 4),
            "avg_logprob": round(transcript.avg_logprob, 4),
            "no_speech_prob": round(transcript.no_speech_prob, 4),
        },
    )
    return fields


class SpeechTranscriptPredictor:
    """Analyze on the fusion service with the clip's audio only and `transcript_as_text` on. The
    prediction is the fused distribution; the per-modality fields ride along in `extra`."""

    def __init__(self, address: str, timeout_s: float = 60.0, max_message_bytes: int = 64 << 20) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=grpc_options(max_message_bytes))
        self.stub = fusion_pb2_grpc.FusionServiceStub(self.channel)
        self.timeout_s = timeout_s

    async def predict(self, sample: Sample) -> Prediction:
        if sample.path is None:
            raise ValueError(f"sample {sample.id} has no audio path")
        request = fusion_pb2.AnalyzeRequest(audio=sample.path.read_bytes(), transcript_as_text=True)
        response = await self.stub.Analyze(request, timeout=self.timeout_s)
        return prediction_of(response)

    async def close(self) -> None:
        await self.channel.close()


def prediction_of(response: fusion_pb2.AnalyzeResponse) -> Prediction:
    """The runner's Prediction of an Analyze answer: the fused distribution, the audio model as the
    run's model (the text model may differ per language, so it is recorded per clip), the rest as extra."""
    has_fused = response.fused.HasField("distribution")
    fused = probs_from_distribution(response.fused.distribution).tolist() if has_fused else None
    return Prediction(fused, _model(response.audio.model), extra=pair_fields(response))


def _predicted(probs: list[float] | None) -> str | None:
    return None if probs is None else LABELS[max(range(len(probs)), key=probs.__getitem__)]


@dataclass(frozen=True)
class PairMetrics:
    """The three readings of one set of Analyze answers, and what the text modality was like."""

    audio: ClassificationMetrics
    fused: ClassificationMetrics
    text: ClassificationMetrics
    clips: int
    # Clips whose text modality gave a distribution (any reliability) / took part in the fusion.
    text_present: int
    text_fused: int
    # Mean reliability of the text modality (as fused: text service x recogniser) where present.
    mean_text_reliability: float | None
    transcript_languages: dict[str, int]
    text_models: list[str]

    @property
    def fused_minus_audio_accuracy(self) -> float:
        return self.fused.accuracy - self.audio.accuracy

    @property
    def fused_minus_audio_macro_f1(self) -> float:
        return self.fused.macro_f1 - self.audio.macro_f1

    def as_dict(self) -> dict[str, object]:
        return {
            "clips": self.clips,
            "audio": self.audio.as_dict(),
            "fused": self.fused.as_dict(),
            "text": self.text.as_dict(),
            "fused_minus_audio": {
                "accuracy": self.fused_minus_audio_accuracy,
                "macro_f1": self.fused_minus_audio_macro_f1,
            },
            "text_present": self.text_present,
            "text_present_share": self.text_present / self.clips if self.clips else 0.0,
            "text_fused": self.text_fused,
            "text_fused_share": self.text_fused / self.clips if self.clips else 0.0,
            "mean_text_reliability": self.mean_text_reliability,
            "transcript_languages": self.transcript_languages,
            "text_models": self.text_models,
        }


def pair_metrics(records: Iterable[Mapping[str, Any]]) -> PairMetrics:
    """Audio, fused and text metrics over completed speech-transcript records (failed calls left out)."""
    scored = [r for r in records if r.get("status") in ("ok", "no_prediction")]
    truth = [r["label"] for r in scored]
    text_reliabilities = [r["reliability"]["text"] for r in scored if r.get("text") is not None]
    languages = Counter((r.get("transcript") or {}).get("language") or "(none)" for r in scored)
    return PairMetrics(
        audio=classification_metrics(truth, [_predicted(r.get("audio")) for r in scored]),
        fused=classification_metrics(truth, [r.get("predicted") for r in scored]),
        text=classification_metrics(truth, [_predicted(r.get("text")) for r in scored]),
        clips=len(scored),
        text_present=len(text_reliabilities),
        text_fused=sum(1 for r in scored if "text" in (r.get("fused_weights") or {})),
        mean_text_reliability=sum(text_reliabilities) / len(text_reliabilities) if text_reliabilities else None,
        transcript_languages=dict(languages.most_common()),
        text_models=sorted({r["text_model"] for r in scored if r.get("text_model")}),
    )


def pairs_markdown(title: str, metrics: PairMetrics, meta: Mapping[str, Any]) -> str:
    """The report of a speech-transcript run: the three readings side by side, then the text modality."""
    rows = (("audio alone", metrics.audio), ("fused (audio + transcript text)", metrics.fused))
    lines = [
        f"# Evaluation: {title}, speech + own transcript through Analyze",
        "",
        f"- audio model: `{meta.get('model', 'unknown')}`; text model(s): "
        + (", ".join(f"`{m}`" for m in metrics.text_models) or "none answered"),
        f"- clips scored: {metrics.clips} (failed calls: {meta.get('failed', 0)})",
        "",
        "| reading | accuracy | macro-F1 | weighted-F1 | no prediction |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in (*rows, ("text alone (for information)", metrics.text)):
        lines.append(f"| {name} | {m.accuracy:.4f} | {m.macro_f1:.4f} | {m.weighted_f1:.4f} | {m.without_prediction} |")
    share = metrics.text_present / metrics.clips if metrics.clips else 0.0
    fused_share = metrics.text_fused / metrics.clips if metrics.clips else 0.0
    reliability = "-" if metrics.mean_text_reliability is None else f"{metrics.mean_text_reliability:.3f}"
    languages = ", ".join(f"{lang} {n}" for lang, n in metrics.transcript_languages.items())
    lines += [
        f"| **fused − audio** | **{metrics.fused_minus_audio_accuracy:+.4f}** | "
        f"**{metrics.fused_minus_audio_macro_f1:+.4f}** | "
        f"{metrics.fused.weighted_f1 - metrics.audio.weighted_f1:+.4f} | |",
        "",
        f"- text modality present: {metrics.text_present}/{metrics.clips} clips ({share:.1%}); "
        f"took part in the fusion: {metrics.text_fused} ({fused_share:.1%}); mean reliability where present: "
        f"{reliability}",
        f"- transcript languages (Whisper): {languages or '-'}",
        "",
        "Per-class recall:",
        "",
        "| reading | " + " | ".join(metrics.fused.evaluated_labels) + " |",
        "|---|" + "---:|" * len(metrics.fused.evaluated_labels),
    ]
    for name, m in (("audio", metrics.audio), ("fused", metrics.fused), ("text", metrics.text)):
        lines.append(f"| {name} | " + " | ".join(f"{m.recall[label]:.3f}" for label in m.evaluated_labels) + " |")
    lines += ["", f"Prediction cache for the weight search: `{PAIRS_CACHE_FILE}` (docs/fusion.md).", ""]
    return "\n".join(lines)


CACHE_KEYS = ("id", "label", "vision", "audio", "text", "reliability", "transcript", "text_language", "text_model")


def write_pairs_cache(records: Iterable[Mapping[str, Any]], path: Path, set_name: str) -> int:
    """The completed records as a weight-search cache (services/fusion/weight_search.py): one JSON line
    per clip with label, vision (null), audio and text probabilities (null where absent), per-modality
    reliability, and `set` (the group a speaker-disjoint search holds out) and the transcript. Returns
    the number of rows."""
    rows = [
        {"set": set_name, **{key: record.get(key) for key in CACHE_KEYS}}
        for record in records
        if record.get("status") in ("ok", "no_prediction")
        and (record.get("audio") is not None or record.get("text") is not None)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return len(rows)
