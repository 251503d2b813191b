"""What tracing costs: latency of AnalyzeText (the text service alone: a server span and a Triton span)
and of Analyze with text only (fusion → text: four spans in two processes), with tracing off (the
default: the OpenTelemetry API's no-op tracer) and on (every span sampled and exported over OTLP/gRPC to
a receiver in this process, as to a Collector on the node), side by side; then the span work of one
Analyze alone, in this process, off and on (a figure that the machine's load blurs far less).

    OMP_NUM_THREADS=1 python -m bench.bench_tracing --pairs 300 --out runs/bench/tracing.json

Starts the real tritonserver once and two copies of the text and fusion services as their own
processes (as the stack runs them), one copy untraced and one traced, configured only through the
environment. Calls alternate off/on, one at a time (latency, not throughput), so both modes see the
same machine load. Reports each mode's percentiles, the median of the paired differences on - off
and the p50 overhead in percent. Each path is bounded by --pairs and --max-seconds."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bench.common import local_triton, summary, write_results
from emomesh.logs import REQUEST_ID_HEADER, outbound_metadata
from emomesh.paths import PROJECT_ROOT
from emomesh.procs import free_port, grpc_healthy, stop_process, wait_until
from emomesh.tracing import (
    RPC_SYSTEM,
    ServerCallSpan,
    client_span,
    install_tracer_provider,
    trace_headers,
    trace_metadata,
    triton_span,
)
from emomesh.tritonserver import TritonServer
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from emotion.text.v1 import text_pb2, text_pb2_grpc

TEXT = "I am so happy to see you again, this is wonderful news."
MODES = ("off", "on")


class SpanSink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that counts what it gets and keeps nothing."""

    def __init__(self) -> None:
        self.spans = 0
        self.lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        count = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        with self.lock:
            self.spans += count
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def span_sink() -> Iterator[tuple[SpanSink, int]]:
    sink = SpanSink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield sink, port
    finally:
        server.stop(None)


@contextmanager
def services(mode: str, triton: TritonServer, otlp_port: int, logs: Path) -> Iterator[dict[str, str]]:
    """Text and fusion (fusion → text only) as processes; yields their addresses."""
    addresses = {"text": f"127.0.0.1:{free_port()}", "fusion": f"127.0.0.1:{free_port()}"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "EMOMESH_TRITON_URL": triton.grpc_url,
            "EMOMESH_TEXT_LISTEN": addresses["text"],
            "EMOMESH_TEXT_METRICS_PORT": "0",
            "EMOMESH_FUSION_LISTEN": addresses["fusion"],
            "EMOMESH_FUSION_METRICS_PORT": "0",
            "EMOMESH_FUSION_TEXT_ADDR": addresses["text"],
            "PYTHONUNBUFFERED": "1",
        }
    )
    if mode == "on":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{otlp_port}"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("text", "fusion"):
            log_path = logs / f"{name}-{mode}.log"
            with log_path.open("wb") as log_file:
                process = subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}.server"],
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=PROJECT_ROOT,
                    start_new_session=True,
                )
            processes.append(process)
            wait_until(lambda a=addresses[name]: grpc_healthy(a), 120, f"{name} ({mode})", process, log_path)
        yield addresses
    finally:
        for process in reversed(processes):
            stop_process(process)


Call = Callable[[], Awaitable[object]]


def text_call(stub: text_pb2_grpc.TextServiceStub) -> Call:
    request = text_pb2.AnalyzeTextRequest(text=TEXT)
    return lambda: stub.AnalyzeText(request, timeout=30)


def analyze_call(stub: fusion_pb2_grpc.FusionServiceStub) -> Call:
    request = fusion_pb2.AnalyzeRequest(text=TEXT)
    return lambda: stub.Analyze(request, timeout=30)


async def paired(calls: dict[str, Call], pairs: int, max_seconds: float) -> dict[str, object]:
    """One call off, one call on, and again (who goes first alternates), one call at a time: both
    modes see the same machine load, and each pair gives a difference on - off."""
    for _ in range(5):
        for mode in MODES:
            await calls[mode]()
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    start = time.perf_counter()
    for i in range(pairs):
        if time.perf_counter() - start > max_seconds:
            break
        for mode in MODES if i % 2 == 0 else reversed(MODES):
            began = time.perf_counter()
            await calls[mode]()
            latencies[mode].append(time.perf_counter() - began)
    differences_ms = [(on - off) * 1000 for off, on in zip(latencies["off"], latencies["on"], strict=True)]
    # Throughput is not the point here: each mode's "seconds" is the time spent in its own calls.
    result: dict[str, object] = {mode: summary(latencies[mode], sum(latencies[mode])) for mode in MODES}
    off_p50, on_p50 = (float(np.percentile(latencies[mode], 50)) * 1000 for mode in MODES)
    result["pairs"] = len(differences_ms)
    result["median_paired_difference_ms"] = round(statistics.median(differences_ms), 3)
    result["p50_overhead_percent"] = round((on_p50 - off_p50) / off_p50 * 100, 1)
    return result


async def measure(args: argparse.Namespace, addresses: dict[str, dict[str, str]]) -> dict[str, object]:
    channels = {mode: {n: grpc.aio.insecure_channel(a) for n, a in addrs.items()} for mode, addrs in addresses.items()}
    try:
        paths = {
            "AnalyzeText": {m: text_call(text_pb2_grpc.TextServiceStub(channels[m]["text"])) for m in MODES},
            "Analyze": {m: analyze_call(fusion_pb2_grpc.FusionServiceStub(channels[m]["fusion"])) for m in MODES},
        }
        return {path: await paired(calls, args.pairs, args.max_seconds) for path, calls in paths.items()}
    finally:
        for by_name in channels.values():
            for channel in by_name.values():
                await channel.close()


def analyze_span_work() -> None:
    """The tracing work of one Analyze with text only, fusion → text, done in one process: fusion's
    server span, its outbound metadata and client span, text's server span (parsing the context) and
    its Triton span (injecting it)."""
    fusion = ServerCallSpan("/emotion.fusion.v1.FusionService/Analyze", [(REQUEST_ID_HEADER, "bench")], "bench")
    outbound_metadata()
    with client_span("emotion.text.v1.TextService/AnalyzeText", {RPC_SYSTEM: "grpc"}):
        text = ServerCallSpan("/emotion.text.v1.TextService/AnalyzeText", trace_metadata(), "bench")
        with triton_span("text_minilm_emotion", 1):
            trace_headers()
        text.end(grpc.StatusCode.OK)
    fusion.end(grpc.StatusCode.OK)


def microseconds_per_call(work: Callable[[], None], calls: int) -> float:
    for _ in range(calls // 10):
        work()
    start = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - start) / calls * 1e6


def span_work(calls: int, otlp_port: int) -> dict[str, float]:
    """analyze_span_work in this process, off (before any provider) and then on (the SDK's provider,
    batching to the OTLP receiver: export runs on its thread, as in a service): median of 3 runs."""
    result = {"off": statistics.median(microseconds_per_call(analyze_span_work, calls) for _ in range(3))}
    provider = TracerProvider(resource=Resource.create({"service.name": "emomesh-bench"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{otlp_port}")))
    install_tracer_provider(provider)
    try:
        result["on"] = statistics.median(microseconds_per_call(analyze_span_work, calls) for _ in range(3))
    finally:
        provider.shutdown()
    return {key: round(value, 1) for key, value in result.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=300, help="off/on call pairs per path at most")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="seconds per path at most")
    parser.add_argument("--span-work-calls", type=int, default=5000, help="in-process span-work repetitions")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, span_sink() as (sink, otlp_port), local_triton() as triton:
        state = Path(tmp)
        with (
            services("off", triton, otlp_port, state) as untraced,
            services("on", triton, otlp_port, state) as traced,
        ):
            results = asyncio.run(measure(args, {"off": untraced, "on": traced}))
        # Received by the time the traced services stopped (their graceful stop flushes).
        results["spans_exported_when_on"] = sink.spans
        # Last: it installs a tracer provider in this process, which cannot be undone.
        results["span_work_us_per_analyze_in_process"] = span_work(args.span_work_calls, otlp_port)
    print(json.dumps(results, indent=2))
    write_results(args.out, results)


if __name__ == "__main__":
    main()
