"""Fine-tunes multilingual-e5-small (rebuilt by services.text.e5_import) into the 7-class emotion
classifier for non-English text, and measures it by cross-validation on SMP2020-EWECT's train split.

    python -m services.text.e5_import --out runs/e5_small
    python -m services.text.train_e5 --base runs/e5_small --smp2020 DATA/smp2020_ewect \\
        --goemotions DATA/goemotions --meld DATA/meld --folds 3 --out runs/text_e5

--folds K first trains K models, each without one K-th of the SMP2020 posts, and scores each on the
posts it did not see (one score per fold, and the pooled out-of-fold confusion); then it trains the
shipped model on all of them. Nothing is selected on a held-out fold: the recipe (epochs, learning
rates, frozen layers) is fixed before the folds run, and each fold model is scored once, at its end.
`--folds 0` trains only the final model.

**Folds.** SMP2020-EWECT train holds 877 duplicate texts; a text and its copies always fall in the same
fold (folds are drawn over distinct texts, stratified by label), so no fold is scored on posts it
trained on.

**Data.** All SMP2020 train posts (Chinese; 6 classes, no disgust) plus English rows from GoEmotions and
MELD train, at most --english-per-class per class (disgust, which SMP2020 lacks, is learnt from
these; English also keeps the shared multilingual space anchored). The loss is weighted by inverse
square-root class frequency, as in services.text.train.

**Partial fine-tuning, cached.** The embeddings and the first --frozen-layers transformer layers stay as
the wheel has them; their output is computed once per text (evaluation mode) and cached, and only the
top layers and the head are trained on it. On a 2-core CPU this makes an epoch about 3x cheaper than
fine-tuning every layer, which is what makes cross-validation affordable; the cached path computes
exactly what the full model computes (tests/unit/text/test_train_e5.py). On a CUDA machine it trains
on the GPU.

--out gets the checkpoint services.text.export exports (encoder/, head.pt, tokenizer.json, meta.json,
meta.json holding the cross-validation scores) and cv.json."""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emomesh.evaluation.adapters import text_csv
from emomesh.evaluation.metrics import confusion_matrix, f1_per_class, macro_f1
from emomesh.labels import LABELS, NUM_LABELS, label_index
from services.text.data import Example, load_goemotions, load_meld
from services.text.tokenize import TextTokenizer
from services.text.train import (
    EmotionClassifier,
    inverse_sqrt_class_weights,
    length_bucketed_batches,
    load_classifier_base,
    save,
)

log = logging.getLogger("train_e5")


def load_smp2020(path: Path) -> list[Example]:
    """SMP2020-EWECT train posts (labels.csv as the dataset folder ships it) as examples."""
    split = "train" if _has_split_column(path) else None
    return [Example(s.text or "", label_index(s.label), "smp2020") for s in text_csv(path, split)]


def _has_split_column(path: Path) -> bool:
    csv_path = path / "labels.csv" if path.is_dir() else path
    with csv_path.open(encoding="utf-8") as handle:
        return "split" in handle.readline().strip().split(",")


def english_examples(goemotions: Path | None, meld: Path | None, per_class: int, seed: int) -> list[Example]:
    """At most `per_class` rows per class from GoEmotions and MELD train together, drawn at random."""
    pool: list[Example] = []
    if goemotions:
        pool += load_goemotions(goemotions, "train")
    if meld:
        pool += load_meld(meld, "train")
    by_label: dict[int, list[Example]] = defaultdict(list)
    for example in pool:
        by_label[example.label].append(example)
    rng = random.Random(seed)
    chosen: list[Example] = []
    for label in sorted(by_label):
        rows = by_label[label][:]
        rng.shuffle(rows)
        chosen += rows[:per_class]
    return chosen


def grouped_folds(examples: Sequence[Example], folds: int, seed: int) -> list[int]:
    """A fold index per example: distinct texts are dealt to folds round-robin within each label (a
    text's label is its most common one), so copies of a text share a fold and classes stay balanced."""
    texts_by_label: dict[int, list[str]] = defaultdict(list)
    labels_of: dict[str, Counter[int]] = defaultdict(Counter)
    for example in examples:
        labels_of[example.text][example.label] += 1
    for text, counts in labels_of.items():
        texts_by_label[counts.most_common(1)[0][0]].append(text)
    rng = random.Random(seed)
    fold_of: dict[str, int] = {}
    for label in sorted(texts_by_label):
        texts = sorted(texts_by_label[label])
        rng.shuffle(texts)
        start = rng.randrange(folds)
        for i, text in enumerate(texts):
            fold_of[text] = (start + i) % folds
    return [fold_of[e.text] for e in examples]


# ------------------------------------------------------------------------------------------ the model


@dataclass
class CachedTexts:
    """The frozen layers' output per text, trimmed to its real tokens."""

    hidden: list[torch.Tensor]  # [tokens, hidden] each

    def batch(self, indices: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded hidden states [N, L, H] and attention mask [N, L] of these texts."""
        parts = [self.hidden[i] for i in indices]
        length = max(p.shape[0] for p in parts)
        hidden = torch.zeros(len(parts), length, parts[0].shape[1])
        mask = torch.zeros(len(parts), length, dtype=torch.long)
        for row, part in enumerate(parts):
            hidden[row, : part.shape[0]] = part
            mask[row, : part.shape[0]] = 1
        return hidden.to(device), mask.to(device)


class SplitEncoder:
    """Runs a transformers BertModel in two parts: embeddings + the first `frozen` layers (`bottom`),
    then the remaining layers (`top`) on the bottom's output. Both share the model's own modules, so
    training through `top` trains the model that is later saved and exported whole."""

    def __init__(self, encoder: Any, frozen: int) -> None:
        self.encoder = encoder
        self.frozen = frozen
        layers = encoder.encoder.layer
        if not 0 <= frozen < len(layers):
            raise ValueError(f"--frozen-layers {frozen}: the encoder has {len(layers)} layers")
        self.bottom_layers = layers[:frozen]
        self.top_layers = layers[frozen:]

    def frozen_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.embeddings.parameters()) + list(self.bottom_layers.parameters())

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.top_layers.parameters())

    def _with_layers(self, layers: nn.ModuleList, **inputs: Any) -> torch.Tensor:
        full = self.encoder.encoder.layer
        self.encoder.encoder.layer = layers
        try:
            return self.encoder(**inputs).last_hidden_state
        finally:
            self.encoder.encoder.layer = full

    @torch.inference_mode()
    def bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._with_layers(self.bottom_layers, input_ids=input_ids, attention_mask=attention_mask).clone()

    def top(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # The model's own mask construction (eager, SDPA, ...) for the top layers.
        mask, _ = self.encoder._create_attention_masks(
            attention_mask=attention_mask,
            encoder_attention_mask=None,
            embedding_output=hidden,
            encoder_hidden_states=None,
            cache=None,
        )
        out = hidden
        for layer in self.top_layers:
            result = layer(out, attention_mask=mask)
            out = result[0] if isinstance(result, tuple) else result
        return out


def cache_bottom(
    split: SplitEncoder, tokenizer: TextTokenizer, texts: Sequence[str], batch_size: int = 64
) -> CachedTexts:
    split.encoder.eval()
    hidden: list[torch.Tensor | None] = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = tokenizer.encode([texts[i] for i in chunk])
        length = int(batch.attention_mask.sum(axis=1).max())
        ids = torch.from_numpy(batch.input_ids[:, :length])
        mask = torch.from_numpy(batch.attention_mask[:, :length])
        out = split.bottom(ids, mask)
        for row, index in enumerate(chunk):
            hidden[index] = out[row, : int(mask[row].sum())].float()
        if (start // batch_size) % 20 == 0:
            log.info("cached %d/%d texts (%.0f s)", start + len(chunk), len(texts), time.perf_counter() - started)
    return CachedTexts([h for h in hidden if h is not None])


def classify_cached(
    split: SplitEncoder, head: nn.Module, dropout: nn.Module, hidden: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    from services.text.train import mean_pool

    return head(dropout(mean_pool(split.top(hidden, mask), mask)))


@dataclass(frozen=True)
class Recipe:
    epochs: float
    batch_size: int
    lr: float
    head_lr: float
    label_smoothing: float
    seed: int


def train_top(
    classifier: EmotionClassifier,
    split: SplitEncoder,
    cache: CachedTexts,
    labels: Sequence[int],
    train_indices: Sequence[int],
    recipe: Recipe,
    device: torch.device,
) -> None:
    """Trains the top layers and the head of `classifier` in place on the cached texts."""
    rng = random.Random(recipe.seed)
    torch.manual_seed(recipe.seed)
    counts = Counter(labels[i] for i in train_indices)
    weights = inverse_sqrt_class_weights(counts)
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device), label_smoothing=recipe.label_smoothing)
    for parameter in split.frozen_parameters():
        parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW(
        [
            {"params": split.trainable_parameters(), "lr": recipe.lr},
            {"params": classifier.head.parameters(), "lr": recipe.head_lr},
        ],
        weight_decay=0.01,
    )
    base_lrs = [recipe.lr, recipe.head_lr]
    lengths = [h.shape[0] for h in cache.hidden]
    steps_per_epoch = math.ceil(len(train_indices) / recipe.batch_size)
    total = max(1, math.ceil(steps_per_epoch * recipe.epochs))
    warmup = max(1, total // 20)
    classifier.to(device).train()
    started = time.perf_counter()
    step = 0
    while step < total:
        for batch in length_bucketed_batches(train_indices, recipe.batch_size, rng, length=lengths.__getitem__):
            if step >= total:
                break
            scale = min(1.0, (step + 1) / warmup) * max(0.0, (total - step) / max(1, total - warmup))
            for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = lr * min(1.0, scale)
            hidden, mask = cache.batch(batch, device)
            target = torch.tensor([labels[i] for i in batch], device=device)
            loss = loss_fn(classify_cached(split, classifier.head, classifier.dropout, hidden, mask), target)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(split.trainable_parameters() + list(classifier.head.parameters()), 1.0)
            optimizer.step()
            step += 1
            if step % 50 == 0 or step == total:
                log.info("step %d/%d loss %.4f (%.0f s)", step, total, loss.item(), time.perf_counter() - started)
    classifier.eval()


@torch.inference_mode()
def predict_cached(
    classifier: EmotionClassifier, split: SplitEncoder, cache: CachedTexts, indices: Sequence[int], device: torch.device
) -> np.ndarray:
    """Probabilities [len(indices), 7]."""
    classifier.to(device).eval()
    lengths = [cache.hidden[i].shape[0] for i in indices]
    order = sorted(range(len(indices)), key=lambda k: lengths[k])
    probs = np.zeros((len(indices), NUM_LABELS), dtype=np.float32)
    for start in range(0, len(order), 128):
        chunk = order[start : start + 128]
        hidden, mask = cache.batch([indices[k] for k in chunk], device)
        logits = classify_cached(split, classifier.head, classifier.dropout, hidden, mask)
        probs[chunk] = torch.softmax(logits, dim=-1).cpu().numpy()
    return probs


def fold_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, object]:
    confusion = confusion_matrix(truth, predicted)
    f1 = f1_per_class(confusion)
    return {
        "rows": len(truth),
        "macro_f1": round(macro_f1(confusion), 4),
        "accuracy": round(float(np.mean(truth == predicted)), 4),
        "f1": {LABELS[c]: round(float(f1[c]), 4) for c in range(NUM_LABELS) if confusion[c].sum()},
        "confusion": confusion.tolist(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="checkpoint written by services.text.e5_import")
    parser.add_argument("--smp2020", type=Path, required=True, help="SMP2020-EWECT folder (labels.csv) or CSV")
    parser.add_argument("--goemotions", type=Path, default=None)
    parser.add_argument("--meld", type=Path, default=None)
    parser.add_argument("--english-per-class", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/text_e5"))
    parser.add_argument("--folds", type=int, default=3, help="cross-validation folds on SMP2020 (0: none)")
    parser.add_argument("--frozen-layers", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--label-smoothing", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "train.log")],
        force=True,
    )
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    recipe = Recipe(args.epochs, args.batch_size, args.lr, args.head_lr, args.label_smoothing, args.seed)

    smp = load_smp2020(args.smp2020)
    english = english_examples(args.goemotions, args.meld, args.english_per_class, args.seed)
    examples = smp + english
    labels = [e.label for e in examples]
    log.info(
        "SMP2020 %d posts %s; English %d rows %s",
        len(smp),
        dict(Counter(LABELS[e.label] for e in smp)),
        len(english),
        dict(Counter(LABELS[e.label] for e in english)),
    )
    tokenizer = TextTokenizer(args.base / "tokenizer.json", args.max_length)
    torch.manual_seed(args.seed)
    initial = load_classifier_base(args.base)
    initial_state = {k: v.clone() for k, v in initial.state_dict().items()}
    split = SplitEncoder(initial.encoder, args.frozen_layers)
    cache = cache_bottom(split, tokenizer, [e.text for e in examples])

    smp_rows = list(range(len(smp)))
    english_rows = list(range(len(smp), len(examples)))
    truth = np.array([labels[i] for i in smp_rows])
    report: dict[str, Any] = {"recipe": vars(recipe), "frozen_layers": args.frozen_layers, "folds": []}
    if args.folds:
        fold_of = grouped_folds(smp, args.folds, args.seed)
        out_of_fold = np.zeros((len(smp), NUM_LABELS), dtype=np.float32)
        for fold in range(args.folds):
            initial.load_state_dict(initial_state)
            held_out = [i for i in smp_rows if fold_of[i] == fold]
            trained_on = [i for i in smp_rows if fold_of[i] != fold] + english_rows
            log.info(
                "fold %d/%d: training on %d rows, scoring %d posts",
                fold + 1,
                args.folds,
                len(trained_on),
                len(held_out),
            )
            train_top(initial, split, cache, labels, trained_on, recipe, device)
            out_of_fold[held_out] = predict_cached(initial, split, cache, held_out, device)
            scores = fold_scores(truth[held_out], out_of_fold[held_out].argmax(axis=1))
            report["folds"].append(scores)
            log.info(
                "fold %d: macro-F1 %.4f accuracy %.4f %s",
                fold + 1,
                scores["macro_f1"],
                scores["accuracy"],
                scores["f1"],
            )
        pooled = fold_scores(truth, out_of_fold.argmax(axis=1))
        macro = [f["macro_f1"] for f in report["folds"]]
        report["pooled"] = pooled
        report["macro_f1_mean"] = round(float(np.mean(macro)), 4)
        report["macro_f1_std"] = round(float(np.std(macro)), 4)
        np.save(args.out / "out_of_fold_probabilities.npy", out_of_fold)
        log.info(
            "cross-validation: macro-F1 %.4f ± %.4f, pooled %s",
            report["macro_f1_mean"],
            report["macro_f1_std"],
            {k: pooled[k] for k in ("macro_f1", "accuracy", "f1")},
        )
        (args.out / "cv.json").write_text(json.dumps(report, indent=2) + "\n")

    initial.load_state_dict(initial_state)
    log.info("final model: training on all %d rows", len(examples))
    train_top(initial, split, cache, labels, list(range(len(examples))), recipe, device)
    meta = {
        "base": str(args.base),
        "max_length": args.max_length,
        "train_examples": len(examples),
        "labels": list(LABELS),
        "cross_validation": {k: v for k, v in report.items() if k != "folds"}
        | {"folds": [{k: f[k] for k in ("rows", "macro_f1", "accuracy", "f1")} for f in report["folds"]]},
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    save(initial.cpu(), args.base / "tokenizer.json", args.out, meta)
    log.info("saved %s", args.out)


if __name__ == "__main__":
    main()
