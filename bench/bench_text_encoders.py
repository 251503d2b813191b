"""What a larger text encoder costs to serve, side by side with the shipped one: issue 17 asks that
AnalyzeText's p50 stay within 2x today's served figure.

    python -m services.text.mpnet_base                        # prints DIR, the assembled MPNet-base
    python -m services.text.export --untrained-base DIR --out runs/text_mpnet_untrained/model.onnx \\
        --tokenizer-out runs/text_mpnet_untrained/tokenizer.json
    OMP_NUM_THREADS=1 python -m bench.bench_text_encoders --candidate runs/text_mpnet_untrained \\
        --calls 200 --out runs/bench/text_encoders.json

The candidate folder holds model.onnx (an int8 export with the service's inputs and `probabilities`
output) and its tokenizer.json. An untrained head is enough: the cost does not depend on the weights.

One tritonserver (local variant: Python backend, one onnxruntime thread per model) serves the shipped text
model and the candidate, whose config is the shipped model's under another name (without the
valence/arousal output the candidate lacks); two text services call them, each with its model's
tokenizer. Each sentence is analysed by both, in-process (tokenizer + onnxruntime, one thread) and
through gRPC + Triton, the order alternating from sentence to sentence, so the two models see the same
machine load. Reported: each model's ONNX size and p50/p90 per path, and the median over sentences of
the candidate's time over the shipped model's (a ratio of two calls that ran back to back)."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import time
from pathlib import Path

import grpc
import numpy as np

from bench.bench_text import SENTENCES, corpus
from bench.common import local_triton, write_results
from emomesh.procs import free_port
from emomesh.tritonserver import TritonServer
from emotion.text.v1 import text_pb2, text_pb2_grpc
from services.text.config import DEFAULT_MODEL, DEFAULT_MODEL_FILE, DEFAULT_TOKENIZER, TextSettings
from services.text.model import OnnxTextModel
from services.text.server import build_server
from services.text.tokenize import TextTokenizer

CANDIDATE = "text_encoder_candidate"
SHIPPED, NEW = "shipped", "candidate"


def add_candidate(repo: Path, candidate: Path) -> None:
    """Keeps only the shipped text model in the rendered repository and adds the candidate beside it."""
    for model in repo.iterdir():
        if model.is_dir() and model.name != DEFAULT_MODEL:
            shutil.rmtree(model)
    shutil.copytree(repo / DEFAULT_MODEL, repo / CANDIDATE, symlinks=True)
    config = (repo / CANDIDATE / "config.pbtxt").read_text()
    config = config.replace(f'name: "{DEFAULT_MODEL}"', f'name: "{CANDIDATE}"')
    config = re.sub(r'output \{\s*name: "valence_arousal".*?\}\n', "", config, flags=re.S)
    config = re.sub(r'("emomesh_model_version" value: \{ string_value: )"[^"]*"', rf'\1"{candidate.name}"', config)
    (repo / CANDIDATE / "config.pbtxt").write_text(config)
    model = repo / CANDIDATE / "1" / "model.onnx"
    model.unlink()
    model.symlink_to((candidate / "model.onnx").resolve())


async def run(args: argparse.Namespace, triton: TritonServer) -> dict[str, object]:
    files = {SHIPPED: (DEFAULT_MODEL, DEFAULT_MODEL_FILE, DEFAULT_TOKENIZER)}
    files[NEW] = (CANDIDATE, args.candidate / "model.onnx", args.candidate / "tokenizer.json")
    servers, tokenizers, models = {}, {}, {}
    for name, (model_name, onnx_file, tokenizer_file) in files.items():
        settings = TextSettings.from_env(
            {
                "EMOMESH_TEXT_LISTEN": f"127.0.0.1:{free_port()}",
                "EMOMESH_TEXT_METRICS_PORT": "0",
                "EMOMESH_TRITON_URL": triton.grpc_url,
                "EMOMESH_TEXT_MODEL": model_name,
                "EMOMESH_TEXT_TOKENIZER": str(tokenizer_file),
                "EMOMESH_TEXT_MULTILINGUAL_MODEL": "",
            }
        )
        servers[name] = await build_server(settings)
        await servers[name].start()
        tokenizers[name] = TextTokenizer(tokenizer_file, settings.max_tokens)
        models[name] = OnnxTextModel(onnx_file, threads=1)
    texts = corpus(args.calls)
    ms: dict[str, dict[str, list[float]]] = {name: {"in_process": [], "served": []} for name in files}
    try:
        channels = {name: grpc.aio.insecure_channel(server.address) for name, server in servers.items()}
        stubs = {name: text_pb2_grpc.TextServiceStub(channel) for name, channel in channels.items()}
        for name in files:  # warm-up: sessions, connections, first-call allocations
            for text in SENTENCES:
                await stubs[name].AnalyzeText(text_pb2.AnalyzeTextRequest(text=text), timeout=60)
                models[name].classify(tokenizers[name].encode([text]))
        for i, text in enumerate(texts):
            order = [SHIPPED, NEW] if i % 2 == 0 else [NEW, SHIPPED]
            for name in order:
                start = time.perf_counter()
                models[name].classify(tokenizers[name].encode([text]))
                ms[name]["in_process"].append((time.perf_counter() - start) * 1000)
            for name in order:
                start = time.perf_counter()
                await stubs[name].AnalyzeText(text_pb2.AnalyzeTextRequest(text=text), timeout=60)
                ms[name]["served"].append((time.perf_counter() - start) * 1000)
        for channel in channels.values():
            await channel.close()
    finally:
        for server in servers.values():
            await server.stop()
    result: dict[str, object] = {"calls": len(texts), "candidate_dir": str(args.candidate)}
    for name, (_, onnx_file, _) in files.items():
        result[name] = {"onnx_mb": round(onnx_file.stat().st_size / 1e6, 1)} | {
            f"{path}_p{q}_ms": round(float(np.percentile(values, q)), 2)
            for path, values in ms[name].items()
            for q in (50, 90)
        }
    for path in ("in_process", "served"):
        ratios = [c / s for c, s in zip(ms[NEW][path], ms[SHIPPED][path], strict=True)]
        result[f"{path}_candidate_over_shipped"] = round(statistics.median(ratios), 2)
    result["candidate_in_process_p50_over_shipped_served_p50"] = round(
        float(np.percentile(ms[NEW]["in_process"], 50) / np.percentile(ms[SHIPPED]["served"], 50)), 2
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", type=Path, required=True, help="folder with model.onnx and tokenizer.json")
    parser.add_argument("--calls", type=int, default=200, help="sentences, each analysed by both models")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    for name in ("model.onnx", "tokenizer.json"):
        if not (args.candidate / name).is_file():
            parser.error(f"{args.candidate / name} is missing")
    with local_triton(lambda repo: add_candidate(repo, args.candidate), ready_s=300) as triton:
        summary = asyncio.run(run(args, triton))
    print(json.dumps(summary, indent=2))
    write_results(args.out, summary)


if __name__ == "__main__":
    main()
