"""Scores the exported text model (the ONNX file Triton serves, run in-process with onnxruntime) on the
dev sets, with the service's own tokenizer and max length.

    python -m services.text.evaluate --goemotions DATA/goemotions --meld DATA/meld [--json out.json]

GoEmotions dev: single-class rows only (see services/text/data.py), 7 classes: macro-F1 and accuracy.
MELD dev: every utterance: weighted-F1 (the metric MELD papers report) and accuracy; with
--context-tokens N (the model's emomesh_context_tokens) twice, alone and with the earlier turns of its
dialogue as the service reads them (services/text/context.py). F1 as everywhere in
the project (emomesh.evaluation.metrics; macro over the classes present in the truth)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from emomesh.evaluation.metrics import confusion_matrix, f1_per_class, macro_f1, weighted_f1
from emomesh.labels import LABELS, NUM_LABELS
from services.text.config import DEFAULT_MODEL_FILE, DEFAULT_TOKENIZER
from services.text.data import Example, load_goemotions, load_meld
from services.text.model import OnnxTextModel
from services.text.tokenize import TextTokenizer


def predict(
    model: OnnxTextModel,
    tokenizer: TextTokenizer,
    texts: list[str],
    contexts: list[str] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    every_context = contexts if contexts is not None else [""] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + len(every_context[i]))
    probs = np.zeros((len(texts), NUM_LABELS), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.encode([texts[i] for i in rows], [every_context[i] for i in rows])
        probs[rows] = model.classify(batch)
    return probs


def evaluate(
    model: OnnxTextModel, tokenizer: TextTokenizer, examples: list[Example], with_context: bool = False
) -> dict[str, object]:
    truth = np.array([e.label for e in examples])
    contexts = [e.context for e in examples] if with_context else None
    predicted = predict(model, tokenizer, [e.text for e in examples], contexts).argmax(axis=1)
    confusion = confusion_matrix(truth, predicted)
    return {
        "rows": len(examples),
        "macro_f1": round(macro_f1(confusion), 4),
        "weighted_f1": round(weighted_f1(confusion), 4),
        "accuracy": round(float(np.mean(truth == predicted)), 4),
        "f1_per_class": {label: round(float(f), 3) for label, f in zip(LABELS, f1_per_class(confusion), strict=True)},
        "confusion (rows=truth, cols=predicted, LABELS order)": confusion.tolist(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--goemotions", type=Path, default=None)
    parser.add_argument("--meld", type=Path, default=None)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_FILE)
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--context-tokens", type=int, default=0, help="the model's context budget (0: none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if not (args.goemotions or args.meld):
        parser.error("give --goemotions and/or --meld")
    model = OnnxTextModel(args.model, args.threads)
    tokenizer = TextTokenizer(args.tokenizer, args.max_tokens, args.context_tokens)
    results: dict[str, object] = {
        "model": str(args.model),
        "max_tokens": args.max_tokens,
        "context_tokens": args.context_tokens,
    }
    runs = [("goemotions_dev", args.goemotions, load_goemotions, False), ("meld_dev", args.meld, load_meld, False)]
    if args.context_tokens:
        runs.append(("meld_dev_with_context", args.meld, load_meld, True))
    for name, root, loader, with_context in runs:
        if root is None:
            continue
        start = time.perf_counter()
        results[name] = evaluate(model, tokenizer, loader(root, "dev"), with_context)
        print(f"{name}: {json.dumps(results[name])}  ({time.perf_counter() - start:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
