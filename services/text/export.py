"""Exports a classifier trained by services.text.train to the ONNX model Triton serves, int8-quantized.

    python -m services.text.export --checkpoint runs/text_minilm

Writes deploy/triton/models/text_minilm_emotion/1/model.onnx and services/text/assets/tokenizer.json.
The graph takes `input_ids` and `attention_mask` (int64 [N, L], both dimensions dynamic) and returns
`probabilities` (float32 [N, 7], softmax, in LABELS order). The float export is quantized with
onnxruntime's dynamic int8 quantization (weights int8, activations quantized on the fly): ~4x smaller
(90 MB -> ~23 MB, within the repository's size budget) and faster on CPU, for ~1 point of accuracy.
The GPU image serves a float32 graph derived from the int8 file (services/text/float_model.py): after
re-exporting, update its checksum in models.yaml (`python -m services.text.float_model --print-checksum`).

`--untrained-base DIR` exports an encoder from a Hugging Face checkpoint folder with a new, untrained head
instead (e.g. MPNet-base from services.text.mpnet_base): what serving that encoder costs can be measured
(bench.bench_text_encoders) before anything is trained on it. Its probabilities mean nothing."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from emomesh.onnx_export import export_onnx
from services.text.config import DEFAULT_MODEL_FILE, DEFAULT_TOKENIZER
from services.text.model import ATTENTION_MASK, INPUT_IDS, OUTPUT
from services.text.tokenize import TextTokenizer
from services.text.train import EmotionClassifier, load_classifier, load_classifier_base


def export_float(model: EmotionClassifier, tokenizer_json: Path, out: Path) -> None:
    """The classifier (softmax on) as a float32 ONNX graph with dynamic batch and sequence."""
    tokenizer = TextTokenizer(tokenizer_json, 64)
    sample = tokenizer.encode(["a short one", "and a somewhat longer sentence to give the batch two lengths"])
    export_onnx(
        model,
        (torch.from_numpy(sample.input_ids), torch.from_numpy(sample.attention_mask)),
        out,
        [INPUT_IDS, ATTENTION_MASK],
        [OUTPUT],
        {INPUT_IDS: {0: "batch", 1: "sequence"}, ATTENTION_MASK: {0: "batch", 1: "sequence"}, OUTPUT: {0: "batch"}},
    )


def quantize(source: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        # Gather included: the 30k x 384 word embedding is half the model's weights.
        quantize_dynamic(
            str(prepared), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm", "Gather"]
        )


def compare(reference: Path, candidate: Path, tokenizer_json: Path) -> float:
    """Largest absolute probability difference between two exports on a few sentences."""
    import onnxruntime as ort

    tokenizer = TextTokenizer(tokenizer_json, 64)
    batch = tokenizer.encode(
        [
            "I love this so much!",
            "This is disgusting.",
            "I'm scared of what comes next",
            "ok",
            "Why would you do that?!",
        ]
    )
    feeds = {INPUT_IDS: batch.input_ids, ATTENTION_MASK: batch.attention_mask}
    a = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"]).run([OUTPUT], feeds)[0]
    b = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"]).run([OUTPUT], feeds)[0]
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="output folder of services.text.train")
    source.add_argument(
        "--untrained-base", type=Path, help="HF checkpoint folder: its encoder with an untrained head (cost only)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_FILE)
    parser.add_argument("--tokenizer-out", type=Path, default=DEFAULT_TOKENIZER)
    parser.add_argument("--no-quantize", action="store_true", help="keep float32 weights")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.checkpoint is not None:
        model, tokenizer_json = load_classifier(args.checkpoint, softmax=True), args.checkpoint / "tokenizer.json"
    else:
        torch.manual_seed(0)  # the same untrained head every time
        model, tokenizer_json = load_classifier_base(args.untrained_base).eval(), args.untrained_base / "tokenizer.json"
        model.softmax = True
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp) / "float.onnx"
        export_float(model, tokenizer_json, float_path)
        if args.no_quantize:
            shutil.copyfile(float_path, args.out)
        else:
            quantize(float_path, args.out)
            print(f"int8 vs float32: max probability difference {compare(float_path, args.out, tokenizer_json):.4f}")
    args.tokenizer_out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_json, args.tokenizer_out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) and {args.tokenizer_out}")


if __name__ == "__main__":
    main()
