"""Shared bench helpers: bounded closed-loop load generators (asyncio for gRPC, threads for in-process
calls) that report throughput and latency percentiles the same way, and onnxruntime sessions built the
same way for every in-process baseline.

A closed loop keeps `concurrency` calls in flight; it stops after `max_requests` calls or once
`max_seconds` have passed (whichever comes first), so no bench runs unbounded."""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort

from emomesh.paths import model_file
from emomesh.procs import free_port
from emomesh.triton_repo import RenderOptions, load_specs, render_repository
from emomesh.tritonserver import TritonPorts, TritonServer

# Execution providers of the in-process baselines; `python -m bench --providers cuda` on a GPU machine.
CPU_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)


def ort_session(model: str, providers: Sequence[str] = CPU_PROVIDERS, threads: int = 1) -> ort.InferenceSession:
    """A model of the repository (deploy/triton/models/<model>/1/model.onnx) run in-process, one thread
    per operator by default (what each Triton model instance uses locally)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_file(model)), options, providers=list(providers))


@contextmanager
def local_triton(prepare: Callable[[Path], None] | None = None, ready_s: float = 180) -> Iterator[TritonServer]:
    """The real tritonserver on free ports over the project's model repository, rendered for the local
    variant with one onnxruntime thread per model (`prepare(repository)` may change it before the start),
    in a temporary directory; stopped on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        render_repository(state / "repo", RenderOptions("local", ort_threads=1))
        if prepare is not None:
            prepare(state / "repo")
        triton = TritonServer(
            state / "repo", state, TritonPorts(free_port(), free_port(), free_port()), state / "triton.log"
        )
        triton.start()
        try:
            triton.wait_ready(ready_s)
            yield triton
        finally:
            triton.stop()


def write_results(path: Path | None, results: object) -> None:
    """The bench's results as indented JSON at `--out` (nothing without it)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def summary(latencies_s: Sequence[float], seconds: float, errors: int = 0) -> dict[str, float]:
    """Throughput and latency percentiles (milliseconds) of one closed-loop run."""
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000
    if len(ms) == 0:
        return {"requests": 0, "errors": errors, "seconds": seconds, "per_s": 0.0}
    return {
        "requests": len(ms),
        "errors": errors,
        "seconds": round(seconds, 3),
        "per_s": len(ms) / seconds if seconds > 0 else 0.0,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


async def closed_loop_async(
    call: Callable[[], Awaitable[object]], concurrency: int, max_requests: int, max_seconds: float, warmup: int = 3
) -> dict[str, float]:
    """`concurrency` asyncio workers calling `call` until max_requests or max_seconds; errors are
    counted, not timed."""
    for _ in range(warmup):
        await call()
    latencies: list[float] = []
    errors = 0
    started = 0
    start = time.perf_counter()
    deadline = start + max_seconds

    async def worker() -> None:
        nonlocal started, errors
        while started < max_requests and time.perf_counter() < deadline:
            started += 1
            t = time.perf_counter()
            try:
                await call()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summary(latencies, time.perf_counter() - start, errors)


def closed_loop_threads(
    call: Callable[[], object], concurrency: int, max_requests: int, max_seconds: float, warmup: int = 3
) -> dict[str, float]:
    """The same closed loop for in-process work, on `concurrency` threads (onnxruntime, OpenCV and
    PyAV release the GIL while they compute)."""
    for _ in range(warmup):
        call()
    latencies: list[float] = []
    lock = threading.Lock()
    started = 0
    start = time.perf_counter()
    deadline = start + max_seconds

    def worker() -> None:
        nonlocal started
        while True:
            with lock:
                if started >= max_requests or time.perf_counter() >= deadline:
                    return
                started += 1
            t = time.perf_counter()
            call()
            elapsed = time.perf_counter() - t
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summary(latencies, time.perf_counter() - start)


def expression_input(model: str) -> tuple[tuple[int, int], bool]:
    """(H, W) of a repository expression model's face crops, and whether it wants them histogram-
    equalised (its `emomesh_input_contrast` parameter in deploy/triton/models.yaml), so in-process
    baselines prepare faces as the vision service does."""
    spec = load_specs()[model]
    _, height, width = spec["inputs"][0]["dims"]
    return (int(height), int(width)), spec.get("parameters", {}).get("emomesh_input_contrast") == "equalized"
