"""Text emotion throughput: sentences/s through gRPC + the text service + Triton, against the same work
done in-process (tokenizers + onnxruntime, one thread), at batch 1 and batch 32, measured side by side.

    OMP_NUM_THREADS=1 python -m bench.bench_text --sentences 256 --rounds 3 --out runs/bench/text.json

Starts the real tritonserver (the project's model repository rendered for the local variant, the model
run by onnxruntime with one thread inside Triton's Python backend) and the text service in this process
on free ports. Batch 1 = one AnalyzeText call per sentence, one after the other; batch 32 = AnalyzeTexts
with 32 sentences. The two paths alternate round by round so both see the same machine load; the
median round is reported. English sentences only (no translation on the path)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np

from bench.common import CPU_PROVIDERS, local_triton, ort_session, write_results
from emomesh.paths import PROJECT_ROOT
from emomesh.procs import free_port
from emomesh.tritonserver import TritonServer
from emotion.text.v1 import text_pb2, text_pb2_grpc
from services.text.config import DEFAULT_MODEL, DEFAULT_MODEL_FILE, DEFAULT_TOKENIZER, TextSettings
from services.text.language import detect_language
from services.text.model import ATTENTION_MASK, INPUT_IDS, OUTPUT, OnnxTextModel
from services.text.server import build_server
from services.text.tokenize import TextTokenizer

SENTENCES = (
    "I am so happy to see you again, this is wonderful news.",
    "Why would you do that to me? I told you a hundred times not to.",
    "The train leaves at seven, so we should pack tonight.",
    "I miss her every single day, and nothing feels the same without her around.",
    "Watch out! There is something moving behind the door.",
    "That smell is absolutely revolting, I think I'm going to be sick.",
    "Wait, you're telling me they actually won the whole thing?",
    "ok",
)


class TextPipeline:
    """AnalyzeText's work in-process for English text: language detection, tokenization (the service's
    default 64-token limit), the model."""

    def __init__(self, providers: Sequence[str] = CPU_PROVIDERS, max_tokens: int = 64) -> None:
        self.tokenizer = TextTokenizer(DEFAULT_TOKENIZER, max_tokens)
        self.model = ort_session(DEFAULT_MODEL, providers)

    def model_only(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.model.run([OUTPUT], {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask})[0]

    def __call__(self, text: str) -> np.ndarray:
        detect_language(text)
        batch = self.tokenizer.encode([text])
        return self.model_only(batch.input_ids, batch.attention_mask)[0]


def corpus(count: int) -> list[str]:
    return [SENTENCES[i % len(SENTENCES)] for i in range(count)]


def in_process_round(texts: list[str], batch: int, tokenizer: TextTokenizer, model: OnnxTextModel) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        model.classify(tokenizer.encode(texts[i : i + batch]))
    return len(texts) / (time.perf_counter() - start)


async def grpc_round(texts: list[str], batch: int, stub: text_pb2_grpc.TextServiceStub) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        if batch == 1:
            await stub.AnalyzeText(text_pb2.AnalyzeTextRequest(text=texts[i]), timeout=30)
        else:
            requests = [text_pb2.AnalyzeTextRequest(text=t) for t in texts[i : i + batch]]
            await stub.AnalyzeTexts(text_pb2.AnalyzeTextsRequest(texts=requests), timeout=60)
    return len(texts) / (time.perf_counter() - start)


async def run(args: argparse.Namespace, triton: TritonServer) -> dict[str, object]:
    settings = TextSettings.from_env(
        {
            "EMOMESH_TEXT_LISTEN": f"127.0.0.1:{free_port()}",
            "EMOMESH_TEXT_METRICS_PORT": "0",
            "EMOMESH_TRITON_URL": triton.grpc_url,
        }
    )
    server = await build_server(settings)
    await server.start()
    tokenizer = TextTokenizer(DEFAULT_TOKENIZER, settings.max_tokens)
    model = OnnxTextModel(DEFAULT_MODEL_FILE, threads=1)
    texts = corpus(args.sentences)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = text_pb2_grpc.TextServiceStub(channel)
            # Warm-up: first calls pay for session creation and connection set-up.
            await grpc_round(texts[:32], 32, stub)
            await grpc_round(texts[:8], 1, stub)
            in_process_round(texts[:32], 32, tokenizer, model)
            for _ in range(args.rounds):
                for batch in (1, 32):
                    row = results.setdefault(f"batch {batch}", {"grpc_triton": [], "in_process": []})
                    row["grpc_triton"].append(await grpc_round(texts, batch, stub))
                    row["in_process"].append(in_process_round(texts, batch, tokenizer, model))
    finally:
        await server.stop()
    summary: dict[str, object] = {
        "sentences_per_round": len(texts),
        "rounds": args.rounds,
        "model": str(DEFAULT_MODEL_FILE.relative_to(PROJECT_ROOT)),
    }
    for name, row in results.items():
        grpc_median = statistics.median(row["grpc_triton"])
        local_median = statistics.median(row["in_process"])
        summary[name] = {
            "grpc_triton_sentences_per_s": round(grpc_median, 1),
            "in_process_sentences_per_s": round(local_median, 1),
            "in_process_over_grpc": round(local_median / grpc_median, 2),
            "rounds_grpc": [round(v, 1) for v in row["grpc_triton"]],
            "rounds_in_process": [round(v, 1) for v in row["in_process"]],
        }
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=256, help="sentences per round and path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with local_triton() as triton:
        summary = asyncio.run(run(args, triton))
    print(json.dumps(summary, indent=2))
    write_results(args.out, summary)


if __name__ == "__main__":
    main()
