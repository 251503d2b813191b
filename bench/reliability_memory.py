"""Memory of the services under a burst of large requests: resident set size (RSS) idle, at the peak
and after the burst, for the vision service (AnalyzeImage) and fusion (Analyze with an image), and
with --targets also audio (AnalyzeAudio) and text (AnalyzeText).

    python -m bench.reliability_memory --out runs/bench/reliability_memory.json

Starts an ephemeral embedded stack (tritonserver and the target services; real models), warms each
target up with a few real requests, then sends `--requests` requests of `--size-mb` MB of random bytes,
`--concurrency` in flight (the defaults are issue #13's case: 200 x 30 MB, 32 in flight, above
vision's 20 MiB image limit, so every one of them is refused), and samples every service's RSS
(/proc/<pid>/status VmRSS, every 50 ms) until `--settle-s` seconds after the burst. The peak is the
kernel's high-water mark (VmHWM, reset before each burst) or the highest sample, whichever is higher.

Targets (issue #13): vision's peak at most 1 GiB (its Kubernetes limit), and back within 2x its idle
RSS 60 s after the burst. Within the limits (e.g. --size-mb 19) the same burst measures what the
admission limits leave: requests that are parsed, copied and decoded."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import tempfile
import threading
import time
import wave
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np

from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from emotion.text.v1 import text_pb2, text_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc

MiB = 1024 * 1024
PEAK_TARGET_MIB = 1024.0
SETTLE_RATIO_TARGET = 2.0


def status_kib(pid: int, field_name: str) -> int:
    """A /proc/<pid>/status field in KiB (VmRSS, VmHWM), 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def reset_high_water_mark(pid: int) -> bool:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0, same user)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


@dataclass
class Sampler:
    """Samples the RSS of some processes on a thread: series of (seconds since start, MiB)."""

    pids: Mapping[str, int]
    period_s: float = 0.05
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.series = {name: [] for name in self.pids}
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic() - self._start
            for name, pid in self.pids.items():
                self.series[name].append((now, status_kib(pid, "VmRSS") / 1024))
            self._stop.wait(self.period_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> float:
        return time.monotonic() - self._start

    def peak(self, name: str, since: float) -> float:
        return max((mib for t, mib in self.series[name] if t >= since), default=0.0)


def astronaut_jpeg() -> bytes:
    from skimage import data

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def tone_wav(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return out.getvalue()


# Per target: the service whose memory matters, a real request to warm it up, and the request that
# carries `payload` (random bytes; for text, as many ASCII characters).
WARM_UP: dict[str, Callable[[], bytes]] = {
    "vision": astronaut_jpeg,
    "fusion": astronaut_jpeg,
    "audio": tone_wav,
    "text": lambda: b"Thank you so much, I love it!",
}


def call_for(target: str, channel: grpc.aio.Channel) -> Callable[[bytes], Awaitable[Any]]:
    if target == "vision":
        vision = vision_pb2_grpc.VisionServiceStub(channel)
        return lambda image: vision.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=image), timeout=60)
    if target == "audio":
        audio = audio_pb2_grpc.AudioServiceStub(channel)
        return lambda clip: audio.AnalyzeAudio(audio_pb2.AnalyzeAudioRequest(audio=clip), timeout=60)
    if target == "text":
        text = text_pb2_grpc.TextServiceStub(channel)
        return lambda data: text.AnalyzeText(text_pb2.AnalyzeTextRequest(text=data.decode("latin-1")), timeout=60)
    fusion = fusion_pb2_grpc.FusionServiceStub(channel)
    return lambda image: fusion.Analyze(fusion_pb2.AnalyzeRequest(image=image), timeout=60)


def measure(stack: Stack, target: str, args: argparse.Namespace) -> dict[str, Any]:
    pids = {name: process.pid for name, process in stack.processes.items()}
    size = int(args.size_mb * 1_000_000)
    payload = b"a" * size if target == "text" else os.urandom(size)
    warm = WARM_UP[target]()
    with Sampler(pids) as sampler:
        result = asyncio.run(burst(stack, target, payload, warm, args.requests, args.concurrency, sampler))
        burst_end = sampler.now()
        time.sleep(args.settle_s)
    rows = {}
    for name, pid in pids.items():
        peak = max(sampler.peak(name, result["burst_start"]), status_kib(pid, "VmHWM") / 1024)
        settled = sampler.series[name][-1][1] if sampler.series[name] else 0.0
        rows[name] = {
            "idle_mib": round(result["idle"][name], 1),
            "peak_mib": round(peak, 1),
            "after_settle_mib": round(settled, 1),
            "settle_s": round(sampler.series[name][-1][0] - burst_end, 1) if sampler.series[name] else 0.0,
        }
    return {
        "target": target,
        "codes": result["codes"],
        "details": result["details"],
        "burst_seconds": result["seconds"],
        "rss": rows,
    }


async def burst(
    stack: Stack, target: str, payload: bytes, warm: bytes, requests: int, concurrency: int, sampler: Sampler
) -> dict[str, Any]:
    """Warm-up with real images, idle RSS, then the burst: status counts and one detail per status."""
    address = stack.config.address(target)
    codes: Counter[str] = Counter()
    details: dict[str, str] = {}
    async with grpc.aio.insecure_channel(address, options=grpc_options(256 * MiB)) as channel:
        call = call_for(target, channel)
        for _ in range(5):
            await call(warm)
        await asyncio.sleep(3)
        idle = {name: status_kib(p.pid, "VmRSS") / 1024 for name, p in stack.processes.items()}
        for process in stack.processes.values():
            reset_high_water_mark(process.pid)
        burst_start = sampler.now()
        left = requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                try:
                    await call(payload)
                    code, detail = "OK", ""
                except grpc.aio.AioRpcError as err:
                    code, detail = err.code().name, err.details() or ""
                codes[code] += 1
                details.setdefault(code, detail[:200])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return {
        "idle": idle,
        "burst_start": burst_start,
        "codes": dict(codes),
        "details": details,
        "seconds": round(seconds, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", choices=sorted(WARM_UP), default=["vision", "fusion"])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--size-mb", type=float, default=30.0, help="request size in MB (10^6 bytes)")
    parser.add_argument("--settle-s", type=float, default=60.0, help="seconds to watch RSS after the burst")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work:
        wanted = set(args.targets) | ({"vision"} if "fusion" in args.targets else set())
        services = tuple(name for name in ("vision", "audio", "text", "fusion") if name in wanted)
        config = StackConfig.ephemeral(Path(work), services=services)
        with Stack(config) as stack:
            for target in args.targets:
                row = measure(stack, target, args)
                results.append(row)
                print(
                    f"{target}: {args.requests} x {args.size_mb:g} MB, {args.concurrency} in flight, "
                    f"{row['burst_seconds']} s: {row['codes']}"
                )
                for code, detail in row["details"].items():
                    print(f"  {code}: {detail}")
                for name, rss in row["rss"].items():
                    ratio = rss["after_settle_mib"] / rss["idle_mib"] if rss["idle_mib"] else float("nan")
                    print(
                        f"  {name:<7} RSS idle {rss['idle_mib']:7.1f} MiB   peak {rss['peak_mib']:7.1f} MiB   "
                        f"{args.settle_s:g} s later {rss['after_settle_mib']:7.1f} MiB ({ratio:.2f}x idle)"
                    )
    vision = next((r["rss"]["vision"] for r in results if r["target"] == "vision"), None)
    ok = True
    if vision is not None:
        ok = (
            vision["peak_mib"] <= PEAK_TARGET_MIB
            and vision["after_settle_mib"] <= SETTLE_RATIO_TARGET * vision["idle_mib"]
        )
        print(
            f"vision target (peak <= {PEAK_TARGET_MIB:g} MiB, back within {SETTLE_RATIO_TARGET:g}x idle): "
            f"{'met' if ok else 'NOT met'}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "size_mb": args.size_mb,
            "settle_s": args.settle_s,
            "results": results,
        }
        args.out.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
