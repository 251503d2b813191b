"""Runs a predictor over a dataset's samples with bounded concurrency, appending one JSON line per
sample to a results file as it goes, so an interrupted run resumes where it stopped; then computes
metrics and writes the report.

`run_eval` is the entry point behind `emomesh eval`:

    run_eval(Path("/data/fer2013"), out_dir=Path("eval/fer2013"), split="val", address="127.0.0.1:50051")
    run_eval(Path("/data/ravdess"), out_dir=Path("eval/ravdess"), speakers="17-20", address="127.0.0.1:50052")
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from emomesh.evaluation.adapters import AdapterOptions, Sample, detect_adapter, get_adapter, subsample
from emomesh.evaluation.metrics import (
    ClassificationMetrics,
    RegressionMetrics,
    SentimentMetrics,
    classification_metrics,
    regression_metrics,
    sentiment_metrics,
    sentiment_of,
    valence_arousal_of,
)
from emomesh.evaluation.pairs import (
    MODALITY_MODE,
    MODES,
    PAIRS_CACHE_FILE,
    SPEECH_TRANSCRIPT_MODE,
    PairMetrics,
    SpeechTranscriptPredictor,
    pair_metrics,
    pairs_markdown,
    write_pairs_cache,
)
from emomesh.evaluation.predictors import SERVICE_OF_MODALITY, Predictor, predictor_for
from emomesh.evaluation.report import write_report
from emomesh.labels import LABELS
from emomesh.ports import local_address

log = logging.getLogger(__name__)

# Images whose longer side is at most this are taken to be face crops (FER2013 48x48, CK+48).
FACE_CROP_MAX_SIDE = 96
RESULTS_FILE = "results.jsonl"


@dataclass(frozen=True)
class EvalResult:
    dataset: str
    model: str
    task: str
    metrics: ClassificationMetrics | RegressionMetrics | SentimentMetrics
    failed: int
    out_dir: Path
    report: Path
    seconds: float
    # The speech-transcript mode's audio / fused / text readings (metrics is the fused one).
    pairs: PairMetrics | None = None


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    """Completed records by sample id; failed calls and a torn last line are not completed."""
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    with path.open() as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run
            if record.get("status") in ("ok", "no_prediction"):
                done[record["id"]] = record
    return done


async def predict_all(
    samples: list[Sample],
    predictor: Predictor,
    results_path: Path,
    concurrency: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Predicts every sample not already in results_path; returns all records by id (failed ones too)."""
    records = load_results(results_path)
    todo = [s for s in samples if s.id not in records]
    queue: asyncio.Queue[Sample] = asyncio.Queue()
    for sample in todo:
        queue.put_nowait(sample)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    finished = 0

    with results_path.open("a+b") as raw:
        # An interrupted run can leave a torn last line: end it, so the next record starts clean.
        if raw.tell() > 0:
            raw.seek(-1, 2)
            if raw.read(1) != b"\n":
                raw.write(b"\n")
    with results_path.open("a") as out:

        async def worker() -> None:
            nonlocal finished
            while not queue.empty():
                sample = queue.get_nowait()
                record: dict[str, Any] = {"id": sample.id, "label": sample.label}
                if sample.targets:
                    record["targets"] = dict(sample.targets)
                try:
                    prediction = await predictor.predict(sample)
                except grpc.aio.AioRpcError as exc:
                    record.update(status="error", error=f"{exc.code().name}: {exc.details()}")
                except (OSError, ValueError) as exc:
                    record.update(status="error", error=f"{type(exc).__name__}: {exc}")
                else:
                    probs = prediction.probabilities
                    record.update(
                        status="ok" if probs is not None else "no_prediction",
                        predicted=None if probs is None else LABELS[max(range(len(probs)), key=probs.__getitem__)],
                        probabilities=probs,
                        model=prediction.model,
                    )
                    record.update(prediction.extra)
                # One line per sample, flushed: the file is the resume point.
                out.write(json.dumps(record) + "\n")
                out.flush()
                records[sample.id] = record
                finished += 1
                if progress is not None:
                    progress(finished, len(todo))

        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return records


def looks_like_face_crops(samples: list[Sample]) -> bool:
    from PIL import Image

    first = next(s for s in samples if s.path is not None)
    assert first.path is not None
    with Image.open(first.path) as image:
        return max(image.size) <= FACE_CROP_MAX_SIDE


def service_for(modality: str, mode: str = MODALITY_MODE) -> str:
    """The stack service a run talks to: the modality's own, or fusion for speech + transcript pairs."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == SPEECH_TRANSCRIPT_MODE:
        if modality != "audio":
            raise ValueError(f"--mode {SPEECH_TRANSCRIPT_MODE} needs a speech dataset, this one is {modality}")
        return "fusion"
    return SERVICE_OF_MODALITY[modality]


def default_address(modality: str, mode: str = MODALITY_MODE) -> str:
    """The documented address of the service a run talks to (`emomesh up` without --ephemeral-ports)."""
    return local_address(service_for(modality, mode))


def score(
    task: str, samples: list[Sample], records: dict[str, dict[str, Any]]
) -> tuple[ClassificationMetrics | RegressionMetrics | SentimentMetrics, list[dict[str, Any]]]:
    """The task's metrics over the samples with a completed record (failed calls are left out)."""
    scored = [records[s.id] for s in samples if records.get(s.id, {}).get("status") in ("ok", "no_prediction")]
    if task == "classification":
        return classification_metrics([r["label"] for r in scored], [r.get("predicted") for r in scored]), scored
    probabilities = [r.get("probabilities") for r in scored]
    if task == "regression":
        # The model's own valence/arousal when the service gave them; else the circumplex projection
        # of the distribution (metrics.CIRCUMPLEX).
        return regression_metrics(
            [r["targets"] for r in scored],
            [
                r["dimensions"] if r.get("dimensions") else None if p is None else valence_arousal_of(p)
                for r, p in zip(scored, probabilities, strict=True)
            ],
        ), scored
    return sentiment_metrics(
        [r["targets"]["sentiment"] for r in scored], [None if p is None else sentiment_of(p) for p in probabilities]
    ), scored


def run_eval(
    dataset: Path,
    out_dir: Path,
    *,
    address: str | None = None,
    adapter: str | None = None,
    split: str | None = None,
    speakers: str | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    max_samples: int | None = None,
    concurrency: int = 4,
    face_crops: bool | None = None,
    timeout_s: float = 30.0,
    resume: bool = True,
    mode: str = MODALITY_MODE,
    text_context: bool = True,
    predictor: Predictor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Evaluates the running service on a labelled dataset and writes results.jsonl, metrics.json,
    report.md and (classification) confusion.png into out_dir.

    `adapter=None` picks the adapter from the dataset's layout (see adapters.detect_adapter);
    `address=None` is the documented port of the modality's service. For images, `face_crops=None`
    decides from the first image's size whether to ask the vision service to skip detection.
    `resume=False` starts the results afresh. `text_context=False` sends conversation samples (MELD)
    without their earlier turns. `mode="speech-transcript"` sends each clip of a speech
    dataset to the fusion service's Analyze (audio only, its transcript as text) and scores the audio,
    fused and text readings of each answer side by side, and writes pairs.jsonl for the fusion weight
    search (emomesh.evaluation.pairs)."""
    chosen = get_adapter(adapter or detect_adapter(dataset))
    options = AdapterOptions(split=split, speakers=speakers, value_range=value_range)
    samples = subsample(chosen.load(dataset, options), max_samples)
    modality = samples[0].modality
    if modality == "image" and face_crops is None:
        face_crops = looks_like_face_crops(samples)
    address = address or default_address(modality, mode)
    pairs = mode == SPEECH_TRANSCRIPT_MODE
    results_path = out_dir / RESULTS_FILE
    if not resume and results_path.exists():
        results_path.unlink()
    start = time.perf_counter()

    async def run() -> dict[str, dict[str, Any]]:
        active = predictor or (
            SpeechTranscriptPredictor(address, timeout_s=timeout_s)
            if pairs
            else predictor_for(
                modality,
                address,
                whole_image_is_face=bool(face_crops),
                timeout_s=timeout_s,
                text_context=text_context,
            )
        )
        try:
            return await predict_all(samples, active, results_path, concurrency, progress or _log_progress)
        finally:
            await active.close()

    records = asyncio.run(run())
    seconds = time.perf_counter() - start
    metrics, scored = score(chosen.task, samples, records)
    failed = len(samples) - len(scored)
    models = sorted({r["model"] for r in scored if r.get("model")})
    if len(models) > 1:
        # Resumed results from another model (the service was switched): the scores would mix them.
        log.warning(
            "results from several models; rerun with resume=False (--fresh)", extra={"fields": {"models": models}}
        )
    model = ", ".join(models) or "unknown"
    name = dataset.name + (f" ({split})" if split else "") + (f" speakers {speakers}" if speakers else "")
    if any(sample.context for sample in samples):
        name += " with context" if text_context else " without context"
    paired = pair_metrics(scored) if pairs else None
    meta: dict[str, Any] = {
        "dataset": name,
        "dataset_path": str(dataset),
        "adapter": chosen.name,
        "task": chosen.task,
        "modality": modality,
        "split": split,
        "speakers": speakers,
        "model": model,
        "address": address,
        "face_crops": face_crops,
        "samples": len(samples),
        "failed": failed,
        "max_samples": max_samples,
        "seconds": round(seconds, 1),
        "mode": mode,
    }
    preface = ""
    if paired is not None:
        meta["pairs"] = paired.as_dict()
        meta["pairs_cache"] = PAIRS_CACHE_FILE
        write_pairs_cache(scored, out_dir / PAIRS_CACHE_FILE, dataset.name)
        preface = pairs_markdown(name, paired, meta) + "\n## The fused reading in detail\n\n"
    report = write_report(out_dir, name, metrics, meta, preface=preface)
    return EvalResult(name, model, chosen.task, metrics, failed, out_dir, report, seconds, paired)


def _log_progress(done: int, total: int) -> None:
    if done == total or done % 500 == 0:
        log.info("evaluation progress", extra={"fields": {"done": done, "total": total}})
