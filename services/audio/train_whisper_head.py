"""Trains the speech-emotion head that sits on Whisper's frozen encoder (services/audio/whisper_encoder.py).

    python -m services.audio.train_whisper_head --encoder base \\
        --data DATA/ravdess --data DATA/emodb_2s --data DATA/casia

The encoder is the ASR model's own (Whisper base from its wheels, or tiny.en); it is frozen, so its
hidden states are computed once per analysis window (`features.analysis_windows(..., "whisper_80x310")`,
the function the service uses) and cached as float16 under --cache-dir (about 1.1 MB per window for
base; nothing is written into the repository).

Head (`EmotionHead`, about 0.2 M parameters): each encoder state is layer-normalised, the states are
mixed with learnt softmax weights (which layer carries emotion is learnt, not guessed), projected to
256 with GELU, pooled over time by attention (mean and standard deviation under learnt weights) and
classified into the 7 emotions.

Recipe, fixed before any fold was scored: AdamW (lr 1e-3, weight decay 1e-2), batch 32, one analysis
window per clip per epoch (a random one of the clip's windows), mixup alpha 0.2, cross-entropy with label
smoothing 0.1 and class-balanced weights, at most 40 epochs, early stopping on inner-validation macro-F1
(patience 8; services/audio/folds.inner_validation_speakers). The final model trains on every speaker
but the inner validation ones and is exported to ONNX (input `hidden_states`, output `probabilities`) as
the committed delta that setup merges with the encoder (services/audio/whisper_model.py).

Two options for voices the training set does not cover (`--speed-perturb`, `--ensemble`):
- speed perturbation (Ko et al., 2015): every training clip is also encoded played 0.9x and 1.1x as
  fast (`speed_perturb`: pitch, formants and tempo move together, as from a longer or shorter vocal
  tract), and each epoch draws a clip's window from all three. Validation and scoring read only the
  clips as recorded. Two more caches of the same size.
- an ensemble of heads trained from different seeds, whose probabilities are averaged, exported as
  one ONNX graph (`HeadEnsemble`): each head is 0.14 M parameters beside the encoder's 20 M."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emomesh.labels import NUM_LABELS
from services.audio.dataset import Clip, read_corpus
from services.audio.evaluate import format_confusion, scores
from services.audio.features import DecodeLimits, analysis_windows, decode_audio
from services.audio.folds import FitPredict, inner_validation_speakers, speaker_fold
from services.audio.whisper_model import whisper_model_bin

ENCODERS = {"base": "base", "tiny": "tiny.en"}  # --encoder -> EMOMESH_AUDIO_ASR_MODEL name
HEAD_FEATURES = "whisper_80x310"
PERTURBED_SPEEDS = (0.9, 1.1)


def speed_perturb(samples: np.ndarray, speed: float) -> np.ndarray:
    """The clip played `speed` times as fast (1.1: 10 % shorter and higher), by polyphase resampling
    as Kaldi's and Ko et al.'s speed perturbation does."""
    from scipy.signal import resample_poly

    if speed == 1.0:
        return samples
    ratio = Fraction(speed).limit_denominator(20)
    return resample_poly(samples, ratio.denominator, ratio.numerator).astype(np.float32)


class EmotionHead(nn.Module):
    """hidden_states [N, S, T, D] -> logits [N, 7]."""

    def __init__(self, n_states: int, d_model: int, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.d_model = d_model
        self.layer_logits = nn.Parameter(torch.zeros(n_states))
        self.project = nn.Linear(d_model, hidden)
        self.attention = nn.Linear(hidden, 1)
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(2 * hidden, NUM_LABELS)
        self.config = {"n_states": n_states, "d_model": d_model, "hidden": hidden, "dropout": dropout}

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # A constant shape (not hidden_states.shape[-1:]) so that the ONNX export is static.
        states = F.layer_norm(hidden_states, (self.d_model,))
        mix = torch.softmax(self.layer_logits, dim=0)
        x = (states * mix[None, :, None, None]).sum(dim=1)  # [N, T, D]
        h = F.gelu(self.project(x))  # [N, T, H]
        weights = torch.softmax(self.attention(h).squeeze(-1), dim=1)[..., None]  # [N, T, 1]
        mean = (weights * h).sum(dim=1)
        std = torch.sqrt(((weights * (h - mean[:, None]) ** 2).sum(dim=1)).clamp_min(1e-6))
        return self.classify(self.dropout(torch.cat([mean, std], dim=-1)))


class HeadEnsemble(nn.Module):
    """The served head: the mean of its heads' probabilities (one head: that head's softmax)."""

    def __init__(self, heads: list[EmotionHead]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        probabilities = [torch.softmax(head(hidden_states), dim=-1) for head in self.heads]
        return torch.stack(probabilities).mean(dim=0)


@dataclass
class EncoderStates:
    clips: list[Clip]
    states: np.ndarray  # float16 [windows, S, T, D], layer-normalised
    window_clip: np.ndarray  # clip index of each window
    # False for the windows of a speed-perturbed copy: training draws from them, scoring never reads them.
    recorded: np.ndarray

    @property
    def speakers(self) -> np.ndarray:
        return np.array([c.speaker for c in self.clips])

    @property
    def labels(self) -> np.ndarray:
        return np.array([c.label for c in self.clips])


def _cache_files(clips: list[Clip], encoder: str, cache_dir: Path, speed: float) -> tuple[Path, Path]:
    """The states and window-index files of these clips' encoder states at this speed."""
    model_bin = whisper_model_bin(ENCODERS[encoder])
    identity: list[object] = [HEAD_FEATURES, encoder, model_bin.stat().st_size, [str(c.path) for c in clips]]
    if speed != 1.0:
        identity.append(speed)
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
    return cache_dir / f"whisper-{encoder}-{key}.npy", cache_dir / f"whisper-{encoder}-{key}.clips.npy"


def _encode_clips(clips: list[Clip], encoder: str, cache_dir: Path, threads: int, speed: float) -> None:
    """Computes and caches the states of every window of every clip, played `speed` times as fast."""
    from services.audio.features import WHISPER_FRAMES
    from services.audio.whisper_encoder import build_encoder, encoder_session, read_ctranslate2

    states_file, index_file = _cache_files(clips, encoder, cache_dir, speed)
    run = encoder_session(
        build_encoder(read_ctranslate2(whisper_model_bin(ENCODERS[encoder])), WHISPER_FRAMES), threads
    )
    limits = DecodeLimits(min_duration_s=0.05)
    chunks, window_clip = [], []
    start = time.monotonic()
    for index, clip in enumerate(clips):
        samples = speed_perturb(decode_audio(clip.path.read_bytes(), limits).samples, speed)
        windows = analysis_windows(samples, HEAD_FEATURES).log_mel
        hidden = torch.from_numpy(run(windows))
        chunks.append(F.layer_norm(hidden, hidden.shape[-1:]).numpy().astype(np.float16))
        window_clip.extend([index] * len(windows))
        if index % 100 == 0:
            print(
                f"encoder states x{speed}: {index}/{len(clips)} clips ({(time.monotonic() - start) / 60:.1f} min)",
                flush=True,
            )
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(states_file, np.concatenate(chunks))
    np.save(index_file, np.array(window_clip))


def load_encoder_states(
    folders: list[Path], encoder: str, cache_dir: Path, threads: int = 2, speeds: tuple[float, ...] = (1.0,)
) -> EncoderStates:
    """The encoder states of every window of every clip, recorded (speed 1.0) and at each other speed,
    in one array: computed once and cached per speed, then read whole (3.6 GB per speed for base;
    random batches from a memory map were 4x slower per epoch) into one preallocated array."""
    clips = [clip for folder in folders for clip in read_corpus(folder)]
    files = []
    for speed in speeds:
        states_file, index_file = _cache_files(clips, encoder, cache_dir, speed)
        if not (states_file.exists() and index_file.exists()):
            _encode_clips(clips, encoder, cache_dir, threads, speed)
        files.append((states_file, index_file))
    parts = [np.load(states_file, mmap_mode="r") for states_file, _ in files]
    states = np.empty((sum(len(part) for part in parts), *parts[0].shape[1:]), dtype=np.float16)
    offset = 0
    for part in parts:
        states[offset : offset + len(part)] = part
        offset += len(part)
    indexes = [np.load(index_file) for _, index_file in files]
    recorded = np.concatenate([np.full(len(index), speed == 1.0) for speed, index in zip(speeds, indexes, strict=True)])
    return EncoderStates(clips, states, np.concatenate(indexes), recorded)


def clip_probabilities(head: nn.Module, data: EncoderStates, clip_mask: np.ndarray, batch: int = 64) -> np.ndarray:
    """Mean probabilities over each clip's recorded windows (rows of clips outside the mask stay zero)."""
    head.eval()
    windows = np.flatnonzero(clip_mask[data.window_clip] & data.recorded)
    sums = np.zeros((len(data.clips), NUM_LABELS))
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            idx = windows[i : i + batch]
            probs = head(torch.from_numpy(data.states[idx].astype(np.float32))).numpy()
            np.add.at(sums, data.window_clip[idx], probs)
    counts = np.bincount(data.window_clip[data.recorded], minlength=len(data.clips))[:, None]
    return sums / np.maximum(counts, 1)


def train_head(
    data: EncoderStates,
    train_mask: np.ndarray,
    val_mask: np.ndarray,
    seed: int = 7,
    max_epochs: int = 40,
    patience: int = 8,
    log: bool = True,
) -> tuple[EmotionHead, dict[str, object]]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    _, n_states, _, d_model = data.states.shape
    head = EmotionHead(n_states, d_model)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    labels = data.labels
    train_clips = np.flatnonzero(train_mask)
    windows_of = {int(c): np.flatnonzero(data.window_clip == c) for c in train_clips}
    counts = np.bincount(labels[train_clips], minlength=NUM_LABELS).astype(np.float64)
    weights = torch.tensor(
        np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / NUM_LABELS, 0.0), dtype=torch.float32
    )
    best_f1, best_state, best_epoch, stale, history = -1.0, None, 0, 0, []
    for epoch in range(1, max_epochs + 1):
        head.train()
        order = rng.permutation(train_clips)
        picks = np.array([rng.choice(windows_of[int(c)]) for c in order])
        for i in range(0, len(order), 32):
            # Sorted: reads in array order; the labels follow the same order.
            batch = np.sort(picks[i : i + 32])
            x = torch.from_numpy(data.states[batch].astype(np.float32))
            y = torch.from_numpy(labels[data.window_clip[batch]])
            lam = float(rng.beta(0.2, 0.2))
            perm = torch.randperm(len(x))
            logits = head(lam * x + (1 - lam) * x[perm])
            loss = lam * F.cross_entropy(logits, y, weight=weights, label_smoothing=0.1) + (1 - lam) * F.cross_entropy(
                logits, y[perm], weight=weights, label_smoothing=0.1
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        probs = clip_probabilities(HeadEnsemble([head]), data, val_mask)
        result = scores(labels[val_mask], probs[val_mask].argmax(axis=1))
        f1 = float(result["macro_f1"])  # type: ignore[arg-type]
        history.append({"epoch": epoch, "val_accuracy": result["accuracy"], "val_macro_f1": f1})
        if log:
            print(f"  epoch {epoch}: inner-val accuracy {result['accuracy']:.3f} macro-F1 {f1:.3f}", flush=True)
        if f1 > best_f1:
            best_f1, best_epoch, stale = f1, epoch, 0
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    assert best_state is not None
    head.load_state_dict(best_state)
    head.eval()
    return head, {"best_epoch": best_epoch, "best_inner_val_macro_f1": best_f1, "history": history}


def read_states(args: argparse.Namespace, encoder: str) -> EncoderStates:
    speeds = (1.0, *PERTURBED_SPEEDS) if args.speed_perturb else (1.0,)
    return load_encoder_states(args.data, encoder, args.cache_dir, threads=args.threads, speeds=speeds)


def train_ensemble(
    data: EncoderStates, train_mask: np.ndarray, val_mask: np.ndarray, seed: int, size: int
) -> tuple[HeadEnsemble, list[dict[str, object]]]:
    """`size` heads from seeds seed, seed + 1, ..., each picking its own epoch on the same validation."""
    trained = [train_head(data, train_mask, val_mask, seed=seed + i) for i in range(size)]
    return HeadEnsemble([head for head, _ in trained]).eval(), [report for _, report in trained]


def whisper_fit_predict(args: argparse.Namespace) -> tuple[list[str], FitPredict]:
    """For services.audio.cross_validate: (speakers, fit_predict)."""
    torch.set_num_threads(args.threads)
    data = read_states(args, args.model.removeprefix("whisper-"))
    speakers = data.speakers

    def fit_predict(all_speakers: np.ndarray, test_fold: int, val_speakers: list[str]) -> np.ndarray:
        folds = np.array([speaker_fold(s) for s in speakers])
        val = np.isin(speakers, val_speakers)
        ensemble, _ = train_ensemble(data, (folds != test_fold) & ~val, val, args.seed, args.ensemble)
        return clip_probabilities(ensemble, data, folds == test_fold)

    return list(speakers), fit_predict


def export_head(head: HeadEnsemble, out: Path, example: np.ndarray) -> None:
    from emomesh.onnx_export import export_onnx

    export_onnx(head.eval(), (torch.from_numpy(example.astype(np.float32)),), out, ["hidden_states"], ["probabilities"])


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The head-recipe options that training and services.audio.cross_validate share."""
    parser.add_argument("--speed-perturb", action="store_true", help="also train on 0.9x and 1.1x speed copies")
    parser.add_argument("--ensemble", type=int, default=1, help="heads from consecutive seeds, averaged")


def recipe(args: argparse.Namespace) -> dict[str, object]:
    """The head recipe of parsed arguments, for reports."""
    return {"speed_perturb": args.speed_perturb, "ensemble": args.ensemble, "seed": args.seed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="base")
    parser.add_argument("--data", type=Path, action="append", required=True, help="corpus folder with labels.csv")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/emomesh-audio-cache"))
    parser.add_argument("--out", type=Path, required=True, help="the head's ONNX file")
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    add_recipe_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = read_states(args, args.encoder)
    speakers = data.speakers
    val = np.isin(speakers, inner_validation_speakers(set(speakers.tolist()), None))
    head, heads = train_ensemble(data, ~val, val, args.seed, args.ensemble)
    probs = clip_probabilities(head, data, val)
    result = scores(data.labels[val], probs[val].argmax(axis=1))
    print(f"inner validation ({int(val.sum())} clips, picked the epoch): accuracy {result['accuracy']:.3f}")
    print(format_confusion(result["confusion"]))  # type: ignore[arg-type]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    export_head(head, args.out, np.asarray(data.states[:2]))
    report = {
        "heads": heads,
        "inner_validation": result,
        "head": [member.config for member in head.heads],
        "recipe": recipe(args),
    }
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
