"""Trains the default expression model from scratch on all FER2013 training faces, with the FER+
crowd votes as soft labels, and exports it in the served ONNX form (test-time flip inside the graph).

    python -m services.vision.train_fer --data /work/shared/data/fer2013 \\
        --out deploy/triton/models/fer_ferplus_cnn/1/model.onnx --epochs 16

Needs the `train` extra (torch). About 4 minutes an epoch on this project's 2-core CPU; a checkpoint
is written after every epoch next to --out, and `--resume` continues from it.

Choices, none of them made by looking at the evaluation split (FER2013 val is scored once, by
`emomesh eval`, after training):
- **Data:** every face of the `train` split (28,709), nothing held out; the last epoch is kept (a
  cosine schedule to zero, so there is no epoch to pick).
- **Labels:** the target of a face is 0.6 x its FER2013 label + 0.4 x its FER+ vote distribution over
  the 7 classes (contempt, unknown and not-a-face votes dropped), then label smoothing 0.05. The votes
  say which faces are ambiguous and how; the FER2013 label keeps the model on the label set that the
  evaluation uses (FER+ majority disagrees with it on ~38% of faces, mostly moving them to neutral).
- **Contrast:** FER2013's JPEGs are histogram-equalised (its SOURCE.md). The model's Triton config
  says `emomesh_input_contrast: equalized`, and the service equalises each face crop after resizing
  it (`preprocess.equalize_faces`), so a crop from an ordinary photo reaches the model with the
  contrast the training faces had. Training runs the same function (a near no-op on FER2013).
- **Augmentation:** mirror, rotation +-15 degrees, scale 0.85-1.15, shift +-4 px, a random 44x44 crop
  of the 48x48 face, random erasing (p 0.5, 2-12% of the face).
- **Network:** a VGG-style CNN (4 stages of 2 conv-BN-ReLU, 32-64-128-256 channels, global average
  pooling, dropout 0.3): 1.2 M parameters, 4.7 MB as FP32 ONNX. SGD with Nesterov momentum 0.9, weight
  decay 5e-4, batch 128, one warm-up epoch to lr 0.05 then cosine to zero.
- **Serving graph:** face_gray [N, 1, 48, 48] gray 0..255 -> the centre 44x44 crop and its mirror image
  through the network in one batch -> the mean of the two softmaxes as `probabilities` [N, 7]."""

from __future__ import annotations

import argparse
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emomesh.evaluation.adapters import image_folder
from emomesh.labels import LABELS
from emomesh.onnx_export import export_onnx
from services.vision.preprocess import Box, DetectedFace, crop_faces, equalize_faces

SIDE = 48
CROP = 44
# FER+ vote columns in ferplus_votes.csv, by our label.
FERPLUS_COLUMNS = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happiness",
    "sad": "sadness",
    "surprise": "surprise",
    "neutral": "neutral",
}
FER2013_WEIGHT = 0.6
LABEL_SMOOTHING = 0.05


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ExpressionCnn(nn.Module):
    """Gray faces [N, 1, 44, 44] scaled to about -2..2 -> logits [N, 7]."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i, width in enumerate(widths):
            layers += [conv_bn_relu(cin, width), conv_bn_relu(width, width)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, len(LABELS))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """Gray 0..255 -> about -2..2 (the same in training and in the served graph)."""
    return (pixels / 255.0 - 0.5) / 0.25


class ServedExpressionModel(nn.Module):
    """The served graph: 48x48 gray 0..255 -> centre crop and its mirror -> mean softmax."""

    mirror: torch.Tensor

    def __init__(self, network: ExpressionCnn) -> None:
        super().__init__()
        self.network = network
        offset = (SIDE - CROP) // 2
        self.rows = slice(offset, offset + CROP)
        # Mirroring by a fixed gather: exports as one ONNX Gather on the width axis.
        self.register_buffer("mirror", torch.arange(CROP - 1, -1, -1), persistent=False)

    def forward(self, face_gray: torch.Tensor) -> torch.Tensor:
        crop = normalise(face_gray[:, :, self.rows, self.rows])
        both = torch.cat([crop, crop.index_select(3, self.mirror)], dim=0)
        probs = F.softmax(self.network(both), dim=1)
        n = face_gray.shape[0]
        return (probs[:n] + probs[n:]) / 2


def load_faces(
    root: Path, split: str, side: int = SIDE, equalize: bool = True
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(sample ids = paths in labels.csv, gray [N, side, side] uint8 faces prepared as the service
    prepares them for a model of that side and contrast, label indices)."""
    samples = image_folder(root, split)
    faces = []
    for sample in samples:
        gray = cv2.imread(str(sample.path), cv2.IMREAD_GRAYSCALE)
        # An aligned face crop: the whole image is the face (identity crop, as whole_image_is_face).
        faces.append(crop_faces(gray, [DetectedFace(Box(0, 0, gray.shape[1], gray.shape[0]))], (side, side), 0.0))
    prepared = np.concatenate(faces)
    prepared = equalize_faces(prepared) if equalize else prepared
    labels = np.array([LABELS.index(sample.label) for sample in samples], dtype=np.int64)
    return [sample.id for sample in samples], prepared[:, 0].astype(np.uint8), labels


def soft_targets(root: Path, paths: list[str], labels: np.ndarray) -> np.ndarray:
    """[N, 7] training targets: FER2013 label mixed with the FER+ votes, then smoothed."""
    targets = np.eye(len(LABELS), dtype=np.float32)[labels]
    votes: dict[str, np.ndarray] = {}
    with (root / "ferplus_votes.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            counts = np.array([float(row[FERPLUS_COLUMNS[label]]) for label in LABELS], dtype=np.float32)
            if counts.sum() > 0:
                # ~1,300 JPEGs carry two FER+ rows (near-duplicate faces): their votes add up.
                votes[row["path"]] = votes.get(row["path"], 0) + counts
    with_votes = 0
    for i, path in enumerate(paths):
        if path in votes:
            with_votes += 1
            targets[i] = FER2013_WEIGHT * targets[i] + (1 - FER2013_WEIGHT) * votes[path] / votes[path].sum()
    print(f"FER+ votes for {with_votes} of {len(paths)} faces", flush=True)
    return (1 - LABEL_SMOOTHING) * targets + LABEL_SMOOTHING / len(LABELS)


@dataclass(frozen=True)
class Augmentation:
    """How strongly faces are varied: the first phase's defaults, or the lighter second phase."""

    max_rotation: float = 15.0
    scale: float = 0.15
    shift: float = 4.0
    erase_probability: float = 0.5


LIGHT = Augmentation(max_rotation=10.0, scale=0.1, shift=3.0, erase_probability=0.0)


def augment(batch: np.ndarray, rng: np.random.Generator, how: Augmentation = Augmentation()) -> np.ndarray:
    """uint8 [B, 48, 48] -> float32 [B, 1, 44, 44] augmented crops, gray 0..255."""
    out = np.empty((len(batch), 1, CROP, CROP), dtype=np.float32)
    for i, face in enumerate(batch):
        if rng.random() < 0.5:
            face = face[:, ::-1]
        angle, scale = rng.uniform(-how.max_rotation, how.max_rotation), rng.uniform(1 - how.scale, 1 + how.scale)
        matrix = cv2.getRotationMatrix2D((SIDE / 2, SIDE / 2), angle, scale)
        matrix[:, 2] = matrix[:, 2] + rng.uniform(-how.shift, how.shift, 2)
        warped = cv2.warpAffine(np.ascontiguousarray(face), matrix, (SIDE, SIDE), borderMode=cv2.BORDER_REPLICATE)
        x, y = rng.integers(0, SIDE - CROP + 1, 2)
        crop = warped[y : y + CROP, x : x + CROP].astype(np.float32)
        if rng.random() < how.erase_probability:
            area = rng.uniform(0.02, 0.12) * CROP * CROP
            aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
            h = min(CROP, max(1, round(math.sqrt(area * aspect))))
            w = min(CROP, max(1, round(math.sqrt(area / aspect))))
            top, left = rng.integers(0, CROP - h + 1), rng.integers(0, CROP - w + 1)
            crop[top : top + h, left : left + w] = rng.uniform(0, 255, (h, w))
        out[i, 0] = crop
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="FER2013 folder: labels.csv, ferplus_votes.csv")
    parser.add_argument("--out", type=Path, required=True, help="where to write model.onnx")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--limit", type=int, default=0, help="train on the first N faces only (smoke test)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint next to --out")
    parser.add_argument("--init", type=Path, help="start from this checkpoint's weights (a second phase)")
    parser.add_argument("--light", action="store_true", help="lighter augmentation (LIGHT), no warm-up epoch")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    paths, faces, labels = load_faces(args.data, "train")
    targets = soft_targets(args.data, paths, labels)
    if args.limit:
        faces, labels, targets = faces[: args.limit], labels[: args.limit], targets[: args.limit]
    print(f"training on {len(faces)} faces, {args.epochs} epochs", flush=True)

    network = ExpressionCnn()
    optimizer = torch.optim.SGD(network.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(faces) / args.batch)
    total, warmup = args.epochs * steps_per_epoch, 0 if args.light else steps_per_epoch
    augmentation = LIGHT if args.light else Augmentation()
    if args.init:
        network.load_state_dict(torch.load(args.init, weights_only=False)["network"])
        print(f"starting from the weights of {args.init}", flush=True)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    checkpoint = args.out.with_suffix(".checkpoint.pt")
    first_epoch = 1
    if args.resume and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        rng.bit_generator.state = state["rng"]
        first_epoch = state["epoch"] + 1
        print(f"resumed after epoch {state['epoch']}", flush=True)
    start = time.perf_counter()
    for epoch in range(first_epoch, args.epochs + 1):
        network.train()
        order, losses, correct = rng.permutation(len(faces)), [], 0
        for i in range(0, len(order), args.batch):
            idx = order[i : i + args.batch]
            x = normalise(torch.from_numpy(augment(faces[idx], rng, augmentation)))
            logits = network(x)
            loss = -(torch.from_numpy(targets[idx]) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            correct += int((logits.argmax(dim=1).numpy() == labels[idx]).sum())
        print(
            f"epoch {epoch}: loss {np.mean(losses):.4f}, augmented train accuracy {correct / len(faces):.4f}, "
            f"lr {schedule.get_last_lr()[0]:.5f}, {(time.perf_counter() - start) / 60:.1f} min",
            flush=True,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "network": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "rng": rng.bit_generator.state,
                "epoch": epoch,
            },
            checkpoint,
        )
    export_onnx(
        ServedExpressionModel(network), (torch.zeros(1, 1, SIDE, SIDE),), args.out, ["face_gray"], ["probabilities"]
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)", flush=True)


if __name__ == "__main__":
    main()
