"""What the languages cost, side by side in one run: FusionService.Analyze with the transcript as the text
on the demo's speech clip, the audio service on Whisper base (multilingual, the default) against tiny.en
(English only); and the multilingual text model (text_e5_emotion) against the English one
(text_minilm_emotion) on the same sentences.

    OMP_NUM_THREADS=1 python -m bench.bench_languages --requests 20 --out runs/bench/languages.json

Starts an ephemeral embedded stack (tritonserver, the audio service on Whisper base, the text and fusion
services) and, beside it, a second audio service on tiny.en and a second fusion service that calls it
(same Triton, same text service). Each round sends samples/speech.wav (the demo's sentence) once to each
fusion service as Analyze with audio only and `transcript_as_text` on, the order swapped every round, so
both see the same load of this shared machine; client-side p50/p90 and the ratio base / tiny.en.

Text: tokenization with each model's own tokenizer and token limit (MiniLM 64, e5 128) and inference on
the stack's Triton (services.text.model.TritonTextModel), timed per call at batch 1 (one sentence) and
batch 32, alternating between the models call by call on the same English sentences (bench.bench_text's);
e5 also on Chinese sentences (the demo's), which it is there for. Ratio e5 / MiniLM on English.

The multilingual model is read from deploy/triton/models/text_e5_emotion/1/model.onnx with its
tokenizer services/text/assets/e5_tokenizer.json (services.text.export writes both); without them the
bench stops with a message. Writes JSON (--out) and the markdown table of docs/benchmarks.md (printed,
and beside the JSON as .md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.bench_text import SENTENCES as ENGLISH_SENTENCES
from bench.common import summary, write_results
from emomesh.config import TritonSettings
from emomesh.demo import CHINESE_TEXTS, SAMPLE_SPEECH
from emomesh.labels import modality_name, status_name
from emomesh.paths import PROJECT_ROOT, model_file
from emomesh.procs import free_port, wait_until
from emomesh.server import grpc_options
from emomesh.stack import SERVICES, ServiceProcess, Stack, StackConfig
from emomesh.triton import TritonClient
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from services.audio.asr_models import WHISPER_BASE, WHISPER_TINY_EN
from services.text.config import DEFAULT_MODEL as ENGLISH_MODEL
from services.text.config import DEFAULT_MULTILINGUAL_MAX_TOKENS
from services.text.config import DEFAULT_MULTILINGUAL_MODEL as MULTILINGUAL_MODEL
from services.text.config import DEFAULT_MULTILINGUAL_TOKENIZER as MULTILINGUAL_TOKENIZER
from services.text.config import DEFAULT_TOKENIZER as ENGLISH_TOKENIZER
from services.text.model import TritonTextModel
from services.text.tokenize import TextTokenizer

CALL_TIMEOUT_S = 120.0
# Tokens each model reads in the text service (its defaults).
MAX_TOKENS = {ENGLISH_MODEL: 64, MULTILINGUAL_MODEL: DEFAULT_MULTILINGUAL_MAX_TOKENS}
ASR_MODELS = (WHISPER_BASE, WHISPER_TINY_EN)
# (series name, model, sentences): e5/MiniLM on English is the like-for-like ratio.
TEXT_SERIES = (
    ("minilm_en", ENGLISH_MODEL, ENGLISH_SENTENCES),
    ("e5_en", MULTILINGUAL_MODEL, ENGLISH_SENTENCES),
    ("e5_zh", MULTILINGUAL_MODEL, CHINESE_TEXTS),
)
BATCH_SIZES = (1, 32)


def percentiles(latencies_s: Sequence[float]) -> dict[str, float]:
    """common.summary's figures of a series measured call by call (its time is the calls' sum), with p90."""
    row = summary(latencies_s, float(sum(latencies_s)))
    if latencies_s:
        row["p90_ms"] = float(np.percentile(np.asarray(latencies_s) * 1000, 90))
    return row


def ratio(a: dict[str, float], b: dict[str, float], key: str) -> float | None:
    return round(a[key] / b[key], 2) if a.get(key) and b.get(key) else None


def batches(sentences: Sequence[str], batch: int) -> list[list[str]]:
    """One call's texts per sentence: that sentence at batch 1, it and the next 31 (cycling) at batch 32."""
    return [[sentences[(i + j) % len(sentences)] for j in range(batch)] for i in range(len(sentences))]


def start_beside(stack: Stack, service: str, overrides: dict[str, str]) -> ServiceProcess:
    """Another process of one of the stack's services on free ports, with the stack's environment
    (its Triton, its services' addresses) plus `overrides`; waits until it is SERVING."""
    spec = next(s for s in SERVICES if s.name == service)
    address = f"127.0.0.1:{free_port()}"
    env = stack.service_env(spec)
    env.update(
        {
            f"EMOMESH_{service.upper()}_LISTEN": address,
            f"EMOMESH_{service.upper()}_METRICS_PORT": str(free_port()),
            **overrides,
        }
    )
    log_path = stack.config.state_dir / "logs" / f"{service}-beside.log"
    process = ServiceProcess(spec, env, address, log_path)
    process.start()
    try:
        wait_until(process.is_ready, 120, f"second {service} service", process.process, log_path)
    except BaseException:
        process.stop()
        raise
    return process


def measure_analyze(addresses: dict[str, str], audio: bytes, requests: int, warmup: int) -> dict[str, Any]:
    """Analyze (audio only, transcript as text) on each fusion service, alternating; latencies per ASR model."""
    request = fusion_pb2.AnalyzeRequest(audio=audio, transcript_as_text=True)
    latencies: dict[str, list[float]] = {model: [] for model in addresses}
    last: dict[str, fusion_pb2.AnalyzeResponse] = {}
    channels = {m: grpc.insecure_channel(a, options=grpc_options(64 << 20)) for m, a in addresses.items()}
    try:
        stubs = {m: fusion_pb2_grpc.FusionServiceStub(c) for m, c in channels.items()}
        for model in addresses:
            for _ in range(warmup):
                stubs[model].Analyze(request, timeout=CALL_TIMEOUT_S)
        order = list(addresses)
        for round_number in range(requests):
            for model in order if round_number % 2 == 0 else reversed(order):
                start = time.perf_counter()
                last[model] = stubs[model].Analyze(request, timeout=CALL_TIMEOUT_S)
                latencies[model].append(time.perf_counter() - start)
    finally:
        for channel in channels.values():
            channel.close()
    rows: dict[str, Any] = {}
    for model, response in last.items():
        transcript = response.audio.transcript
        rows[model] = {
            **percentiles(latencies[model]),
            "transcript": transcript.text.strip(),
            "language": transcript.language,
            "text_from_transcript": response.text_from_transcript,
            # Each modality's status and server-side time in the last call.
            "modalities": {
                modality_name(r.modality): {"status": status_name(r.status), "latency_ms": round(r.latency_ms, 1)}
                for r in response.modalities
            },
        }
    return rows


async def measure_text(triton_url: str, rounds: int) -> dict[str, Any]:
    """Tokenize + Triton inference per call, the models alternating call by call, at each batch size."""
    client = TritonClient(TritonSettings(url=triton_url, timeout_s=CALL_TIMEOUT_S))
    tokenizers = {
        ENGLISH_MODEL: TextTokenizer(ENGLISH_TOKENIZER, MAX_TOKENS[ENGLISH_MODEL]),
        MULTILINGUAL_MODEL: TextTokenizer(MULTILINGUAL_TOKENIZER, MAX_TOKENS[MULTILINGUAL_MODEL]),
    }
    try:
        models = {name: TritonTextModel(client, name) for name in tokenizers}
        for served in models.values():
            await served.load()
        results: dict[str, Any] = {}
        for batch in BATCH_SIZES:
            # Each call's texts: one sentence at batch 1 (cycling through them), 32 at batch 32.
            calls = {name: batches(sentences, batch) for name, _, sentences in TEXT_SERIES}
            latencies: dict[str, list[float]] = {name: [] for name, _, _ in TEXT_SERIES}
            tokens: dict[str, list[int]] = {name: [] for name, _, _ in TEXT_SERIES}
            for name, model, _ in TEXT_SERIES:  # warm-up
                await models[model].classify(tokenizers[model].encode(calls[name][0]))
            for round_number in range(rounds):
                for call in range(len(ENGLISH_SENTENCES)):
                    series = TEXT_SERIES if (round_number + call) % 2 == 0 else TEXT_SERIES[::-1]
                    for name, model, _ in series:
                        texts = calls[name][call % len(calls[name])]
                        start = time.perf_counter()
                        encoded = tokenizers[model].encode(texts)
                        await models[model].classify(encoded)
                        latencies[name].append(time.perf_counter() - start)
                        tokens[name].extend(encoded.tokens)
            rows: dict[str, Any] = {
                name: {**percentiles(latencies[name]), "mean_tokens": round(float(np.mean(tokens[name])), 1)}
                for name in latencies
            }
            rows["e5_over_minilm_p50"] = ratio(rows["e5_en"], rows["minilm_en"], "p50_ms")
            results[f"batch {batch}"] = rows
        return results
    finally:
        await client.close()


def shown(value: float | None) -> str:
    """A ratio in the table; a dash where a side had no completed call."""
    return "–" if value is None else str(value)


def markdown(results: dict[str, Any]) -> str:
    """The two tables of docs/benchmarks.md ("Languages: what they cost")."""
    analyze = results["analyze"]
    lines = [
        "| Analyze, audio only, transcript as text | p50 ms | p90 ms | n | transcript (language) |",
        "|---|---:|---:|---:|---|",
    ]
    for model in ASR_MODELS:
        row = analyze[model]
        lines.append(
            f"| Whisper {model} | {row.get('p50_ms', 0):.0f} | {row.get('p90_ms', 0):.0f} | {row['requests']} | "
            f"{row['transcript']!r} ({row['language'] or '?'}) |"
        )
    lines.append(
        f"| **base / tiny.en** | **{shown(analyze['base_over_tiny_en_p50'])}** | "
        f"**{shown(analyze['base_over_tiny_en_p90'])}** | | |"
    )
    lines += [
        "",
        "| text, tokenize + Triton | MiniLM (English) p50 ms | e5 (English) p50 ms | e5 / MiniLM | "
        "e5 (Chinese) p50 ms | mean tokens MiniLM / e5 en / e5 zh |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for batch in BATCH_SIZES:
        rows = results["text"][f"batch {batch}"]
        lines.append(
            f"| batch {batch} | {rows['minilm_en']['p50_ms']:.1f} | {rows['e5_en']['p50_ms']:.1f} | "
            f"**{shown(rows['e5_over_minilm_p50'])}** | {rows['e5_zh']['p50_ms']:.1f} | "
            f"{rows['minilm_en']['mean_tokens']} / {rows['e5_en']['mean_tokens']} / {rows['e5_zh']['mean_tokens']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20, help="Analyze calls per ASR model")
    parser.add_argument("--warmup", type=int, default=1, help="Analyze calls per ASR model before timing")
    parser.add_argument("--text-rounds", type=int, default=5, help="rounds of the 8 calls per text model and batch")
    parser.add_argument("--out", type=Path, help="JSON results (and the markdown table beside it, .md)")
    args = parser.parse_args(argv)
    missing = [p for p in (model_file(MULTILINGUAL_MODEL), MULTILINGUAL_TOKENIZER) if not p.exists()]
    if missing:
        raise SystemExit(
            f"the multilingual text model is missing ({', '.join(map(str, missing))}): "
            "export it with `python -m services.text.export --checkpoint runs/text_e5 "
            f"--out {model_file(MULTILINGUAL_MODEL)} --tokenizer-out {MULTILINGUAL_TOKENIZER}`"
        )
    results: dict[str, Any] = {
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_start": os.getloadavg(),
        "audio": str(SAMPLE_SPEECH.relative_to(PROJECT_ROOT)),
    }
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        config = StackConfig.ephemeral(Path(work), services=("audio", "text", "fusion"))
        # The first stack's audio service on Whisper base whatever the caller's environment says; a slow
        # transcription on a loaded machine is measured, not cut by fusion's 30 s default deadline cap.
        config.extra_env = {
            "EMOMESH_AUDIO_ASR_MODEL": WHISPER_BASE,
            "EMOMESH_FUSION_MAX_DEADLINE_S": str(CALL_TIMEOUT_S),
        }
        with Stack(config) as stack:
            beside: list[ServiceProcess] = []
            try:
                tiny_audio = start_beside(stack, "audio", {"EMOMESH_AUDIO_ASR_MODEL": WHISPER_TINY_EN})
                beside.append(tiny_audio)
                beside.append(start_beside(stack, "fusion", {"EMOMESH_FUSION_AUDIO_ADDR": tiny_audio.address}))
                fusion = {WHISPER_BASE: config.address("fusion"), WHISPER_TINY_EN: beside[-1].address}
                analyze = measure_analyze(fusion, SAMPLE_SPEECH.read_bytes(), args.requests, args.warmup)
            finally:
                for process in reversed(beside):
                    process.stop()
            analyze["base_over_tiny_en_p50"] = ratio(analyze[WHISPER_BASE], analyze[WHISPER_TINY_EN], "p50_ms")
            analyze["base_over_tiny_en_p90"] = ratio(analyze[WHISPER_BASE], analyze[WHISPER_TINY_EN], "p90_ms")
            results["analyze"] = analyze
            results["text"] = asyncio.run(measure_text(stack.triton.grpc_url, args.text_rounds))
    results["load_average_end"] = os.getloadavg()
    results["seconds"] = round(time.perf_counter() - begin, 1)
    table = markdown(results)
    print(table, end="")
    write_results(args.out, results)
    if args.out:
        args.out.with_suffix(".md").write_text(table)
        print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
