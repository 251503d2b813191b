"""Valence and arousal for English text: a linear read-out of the served MiniLM emotion model's own
sentence embedding, trained on EmoBank and added to the same ONNX graph as a second output.

    python -m services.text.train_valence_arousal --emobank DATA/emobank

1. The model's mean-pooled sentence embedding (the input of its 7-emotion head) is read out of the
   committed graph, so the dimensions cost one matrix product on top of the emotion call.
2. EmoBank train (8,062 sentences) -> embeddings; one ridge regression per dimension, its penalty
   and a spread factor (ridge shrinks predictions towards the mean, which concordance punishes) chosen
   by 5-fold cross-validated CCC on train alone.
3. The read-out is appended to the graph: `valence_arousal` [N, 2] = clip(E W + b, -1, 1), targets
   (x - 3) / 2 of EmoBank's 1-5 ratings. The emotion output is untouched.
4. EmoBank dev (1,000 sentences) is scored once, at the end, on the written model.

No torch: onnxruntime for the embeddings, NumPy for the regression."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from emomesh.evaluation.metrics import concordance_correlation
from services.text.config import DEFAULT_MODEL_FILE, DEFAULT_TOKENIZER
from services.text.tokenize import TextTokenizer

OUTPUT = "valence_arousal"
DIMENSIONS = ("valence", "arousal")
ALPHAS = (0.1, 1.0, 3.0, 10.0, 30.0, 100.0)
SPREADS = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0)


def embedding_name(model: onnx.ModelProto) -> str:
    """The tensor the emotion head reads: the input of the head's first MatMul (quantised or not)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type in ("MatMulInteger", "MatMul", "Gemm") and any(i.startswith("head.") for i in node.input[1:2]):
            source = node.input[0]
            producer = producers.get(source)
            if producer is not None and producer.op_type == "DynamicQuantizeLinear":
                source = producer.input[0]
            return source
    raise ValueError("no head MatMul reading an initializer named head.* in this model")


def with_embedding_output(model: onnx.ModelProto) -> onnx.ModelProto:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    exposed.graph.output.append(helper.make_tensor_value_info(embedding_name(model), TensorProto.FLOAT, None))
    return exposed


def with_readout(model: onnx.ModelProto, weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """`model` plus `valence_arousal` = clip(embedding @ weight + bias, -1, 1)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for name in [o.name for o in out.graph.output if o.name == OUTPUT]:
        raise ValueError(f"the model already has an output {name}")
    graph = out.graph
    graph.initializer.extend(
        [
            numpy_helper.from_array(weight.astype(np.float32), "valence_arousal.weight"),
            numpy_helper.from_array(bias.astype(np.float32), "valence_arousal.bias"),
            numpy_helper.from_array(np.array(-1.0, np.float32), "valence_arousal.low"),
            numpy_helper.from_array(np.array(1.0, np.float32), "valence_arousal.high"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("MatMul", [embedding_name(model), "valence_arousal.weight"], ["valence_arousal/matmul"]),
            helper.make_node("Add", ["valence_arousal/matmul", "valence_arousal.bias"], ["valence_arousal/linear"]),
            helper.make_node(
                "Clip", ["valence_arousal/linear", "valence_arousal.low", "valence_arousal.high"], [OUTPUT]
            ),
        ]
    )
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 2]))
    onnx.checker.check_model(out)
    return out


def read_emobank(folder: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """Split -> (texts, targets [n, 2] in [-1, 1]) from emobank.csv (columns id, split, V, A, D, text)."""
    splits: dict[str, tuple[list[str], list[list[float]]]] = {}
    with (folder / "emobank.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            texts, targets = splits.setdefault(row["split"], ([], []))
            texts.append(row["text"])
            targets.append([(float(row["V"]) - 3) / 2, (float(row["A"]) - 3) / 2])
    return {split: (texts, np.asarray(targets)) for split, (texts, targets) in splits.items()}


def embed(model: onnx.ModelProto, tokenizer: TextTokenizer, texts: list[str], batch: int = 64) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(with_embedding_output(model).SerializeToString(), options)
    name = embedding_name(model)
    chunks = []
    for start in range(0, len(texts), batch):
        encoded = tokenizer.encode(texts[start : start + batch])
        (embedding,) = session.run([name], {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask})
        chunks.append(embedding)
    return np.concatenate(chunks).astype(np.float64)


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    xc = x - mean_x
    weight = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - mean_y))
    return weight, mean_y - mean_x @ weight


def choose(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 7) -> dict[str, dict[str, float]]:
    """Per dimension, the (alpha, spread) with the best cross-validated CCC on these rows only."""
    order = np.random.default_rng(seed).permutation(len(x))
    fold_of = np.empty(len(x), dtype=int)
    fold_of[order] = np.arange(len(x)) % folds
    predictions = {alpha: np.zeros_like(y) for alpha in ALPHAS}
    for fold in range(folds):
        train, held = fold_of != fold, fold_of == fold
        for alpha in ALPHAS:
            weight, bias = ridge(x[train], y[train], alpha)
            predictions[alpha][held] = x[held] @ weight + bias
    chosen = {}
    for d, dimension in enumerate(DIMENSIONS):
        best = (-2.0, 0.0, 0.0)
        for alpha, predicted in predictions.items():
            mean = predicted[:, d].mean()
            for spread in SPREADS:
                stretched = np.clip(mean + spread * (predicted[:, d] - mean), -1, 1)
                ccc = concordance_correlation(y[:, d], stretched)
                best = max(best, (ccc, alpha, spread))
        chosen[dimension] = {"cv_ccc": best[0], "alpha": best[1], "spread": best[2]}
    return chosen


def fit(x: np.ndarray, y: np.ndarray, chosen: dict[str, dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    """[embedding, 2] weight and [2] bias with each dimension's spread folded in."""
    weight = np.zeros((x.shape[1], len(DIMENSIONS)))
    bias = np.zeros(len(DIMENSIONS))
    for d, dimension in enumerate(DIMENSIONS):
        w, b = ridge(x, y[:, d : d + 1], chosen[dimension]["alpha"])
        mean = float((x @ w + b).mean())
        spread = chosen[dimension]["spread"]
        weight[:, d] = spread * w[:, 0]
        bias[d] = mean + spread * (b[0] - mean)
    return weight, bias


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emobank", type=Path, required=True, help="folder with emobank.csv")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_FILE, help="the emotion model to extend")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_FILE)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv)
    model = onnx.load(str(args.model))
    if any(o.name == OUTPUT for o in model.graph.output):
        raise SystemExit(f"{args.model} already has {OUTPUT}; start from the emotion-only model")
    tokenizer = TextTokenizer(DEFAULT_TOKENIZER, args.max_tokens)
    data = read_emobank(args.emobank)
    train_texts, train_y = data["train"]
    x = embed(model, tokenizer, train_texts)
    chosen = choose(x, train_y)
    print(f"chosen on train by 5-fold CV: {json.dumps(chosen)}", flush=True)
    weight, bias = fit(x, train_y, chosen)
    extended = with_readout(model, weight, bias)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(extended, str(args.out))
    report: dict[str, object] = {"chosen": chosen, "train_sentences": len(train_texts)}
    # Dev, once, on the written model.
    import onnxruntime as ort

    session = ort.InferenceSession(str(args.out))
    dev_texts, dev_y = data["dev"]
    predicted = np.concatenate(
        [
            session.run([OUTPUT], {"input_ids": e.input_ids, "attention_mask": e.attention_mask})[0]
            for e in (tokenizer.encode(dev_texts[i : i + 64]) for i in range(0, len(dev_texts), 64))
        ]
    )
    for d, dimension in enumerate(DIMENSIONS):
        ccc = concordance_correlation(dev_y[:, d], predicted[:, d])
        pearson = float(np.corrcoef(dev_y[:, d], predicted[:, d])[0, 1])
        report[f"dev_{dimension}"] = {"ccc": ccc, "pearson": pearson, "sentences": len(dev_texts)}
        print(f"EmoBank dev {dimension}: CCC {ccc:.3f} (Pearson {pearson:.3f}), {len(dev_texts)} sentences")
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
