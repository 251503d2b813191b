"""Live streams (FusionService.AnalyzeStream): N concurrent streams of 640x480 frames at 30 fps plus
16 kHz speech, at real time, in one run.

    python -m bench.bench_live --streams 1,2,3 --seconds 20 --out runs/bench/live.json

Starts an ephemeral embedded stack (tritonserver + vision, audio, text, fusion) unless --fusion points
at a running one. Each stream sends a synthetic video (the astronaut's face, from scikit-image, moving
across a 640x480 frame; JPEG) at 30 fps and, alongside, espeak-ng speech with pauses as PCM16 in 100 ms
chunks, both paced at real time, with transcription on. Rows:

- `1 video only`: one stream without audio, the face lane alone (the baseline);
- `N streams`: N streams with audio, at once.

Per row: frames analysed per second per stream (sustained over the run), frames dropped (the face lane
takes the newest frame; older ones are dropped, never queued), face-lane latency p50/p95 (frame sent ->
its faces received, on the client), and speech-lane latency p50/p95 (a window's last sample sent -> its
speech result received; the words come apart, in the background). "Fits" is the largest N whose
face-lane p95 stays within twice that of one stream with audio. With the embedded stack, each row also reads Triton's
own counters: requests per execution of the face detector and the expression model, i.e. how many
frames of concurrent streams Triton's dynamic batcher put into one execution."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.common import write_results
from emomesh.live_cli import (
    SAMPLE_RATE,
    LiveReport,
    Timed,
    audio_chunks,
    decode_pcm16,
    frame_request,
    gliding_frames,
    percentile,
    run_stream,
)
from emomesh.security import open_aio_channel
from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emotion.fusion.v1 import fusion_pb2_grpc

WIDTH, HEIGHT, FPS = 640, 480, 30.0
# The distinct frames of the synthetic video (it loops): 4 s of motion.
DISTINCT_FRAMES = 120
SENTENCES = (
    "I can't believe how well this went, I am so happy today.",
    "Honestly, I am tired and a little sad about all of it.",
    "What? You did that without telling me? That is outrageous!",
)


def moving_face_frames(count: int = DISTINCT_FRAMES) -> list[bytes]:
    """JPEG frames, encoded once (the client must not spend the server's CPU encoding them): the
    astronaut's head (200 px) gliding left and right across a gray 640x480 frame."""
    from skimage import data

    head = cv2.cvtColor(data.astronaut()[0:260, 120:360], cv2.COLOR_RGB2BGR)
    head = cv2.resize(head, (200, 216), interpolation=cv2.INTER_AREA)
    frames = gliding_frames(head, count / FPS, FPS, period_s=count / FPS, swing_px=200)
    return [timed.request.frame.encoded for timed in frames]


def speech_with_pauses(work: Path) -> np.ndarray:
    """espeak-ng sentences, each followed by 1.5 s of silence, as 16 kHz int16."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed for the speech lane")
    parts = []
    for i, sentence in enumerate(SENTENCES):
        wav = work / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), sentence], check=True, capture_output=True)
        samples = decode_pcm16(wav)
        assert samples is not None
        parts += [samples, np.zeros(int(1.5 * SAMPLE_RATE), np.int16)]
    return np.concatenate(parts)


def frames_for(jpegs: list[bytes], seconds: float) -> Iterator[Timed]:
    for index in range(int(seconds * FPS)):
        at = index / FPS
        yield Timed(at, frame_request(jpegs[index % len(jpegs)], at), "frame", index)


def looped(speech: np.ndarray, seconds: float) -> np.ndarray:
    repeats = int(seconds * SAMPLE_RATE // len(speech)) + 1
    return np.tile(speech, repeats)[: int(seconds * SAMPLE_RATE)]


def triton_counts(metrics_url: str | None) -> dict[str, tuple[float, float]]:
    """(inference requests, executions) per model, from Triton's Prometheus metrics."""
    if metrics_url is None:
        return {}
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    counts: dict[str, list[float]] = {}
    for line in text.splitlines():
        for name, slot in (("nv_inference_count{", 0), ("nv_inference_exec_count{", 1)):
            if line.startswith(name):
                model = line.split('model="', 1)[1].split('"', 1)[0]
                counts.setdefault(model, [0.0, 0.0])[slot] += float(line.rsplit(" ", 1)[1])
    return {model: (c[0], c[1]) for model, c in counts.items()}


def batching(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Requests per execution of each model between two readings (1.0: no batching happened)."""
    ratios = {}
    for model, (requests, executions) in after.items():
        done = executions - before.get(model, (0.0, 0.0))[1]
        if done > 0:
            ratios[model] = round((requests - before.get(model, (0.0, 0.0))[0]) / done, 2)
    return ratios


def row(name: str, streams: int, reports: list[LiveReport], seconds: float) -> dict[str, Any]:
    face = [v * 1000 for r in reports for v in r.face_latency_s]
    speech = [v for r in reports for v in r.speech_latency_s]
    fps = []
    analysed = dropped = failed = 0
    for r in reports:
        stats = r.final_stats
        if stats is not None:
            # Over the media's length: the stream stays open a little longer for the last words.
            fps.append(stats.frames_analysed / seconds)
            analysed += stats.frames_analysed
            dropped += stats.frames_dropped
            failed += stats.frames_failed
    return {
        "row": name,
        "streams": streams,
        "analysed_fps_per_stream": round(float(np.mean(fps)), 1) if fps else 0.0,
        "analysed_fps_min": round(min(fps), 1) if fps else 0.0,
        "frames_analysed": analysed,
        "frames_dropped": dropped,
        "frames_failed": failed,
        "face_p50_ms": round(percentile(face, 0.5), 1),
        "face_p95_ms": round(percentile(face, 0.95), 1),
        "speech_p50_s": round(percentile(speech, 0.5), 2) if speech else None,
        "speech_p95_s": round(percentile(speech, 0.95), 2) if speech else None,
        "speech_windows": len(speech),
    }


async def run_row(
    address: str, jpegs: list[bytes], speech: np.ndarray | None, streams: int, seconds: float
) -> list[LiveReport]:
    channel = open_aio_channel(address, None, grpc_options(32 << 20))
    try:
        stub = fusion_pb2_grpc.FusionServiceStub(channel)
        runs = []
        for _ in range(streams):
            media = [frames_for(jpegs, seconds)]
            if speech is not None:
                media.append(audio_chunks(looped(speech, seconds)))
            runs.append(run_stream(stub, media, audio=speech is not None, timeout_s=seconds + 60))
        return list(await asyncio.gather(*runs))
    finally:
        await channel.close()


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| row | fps analysed / stream (min) | dropped | face p50 / p95 ms | speech p50 / p95 s | windows "
        "| Triton requests per execution |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        speech = f"{r['speech_p50_s']} / {r['speech_p95_s']}" if r["speech_p50_s"] is not None else "-"
        lines.append(
            f"| {r['row']} | {r['analysed_fps_per_stream']} ({r['analysed_fps_min']}) | {r['frames_dropped']} | "
            f"{r['face_p50_ms']} / {r['face_p95_ms']} | {speech} | {r['speech_windows']} | "
            + ", ".join(f"{m} {v}" for m, v in r.get("triton_requests_per_execution", {}).items())
            + " |"
        )
    return "\n".join(lines)


def fits(rows: list[dict[str, Any]]) -> int:
    """The most streams with audio whose face-lane p95 stays within twice that of one stream with audio."""
    with_audio = rows[1:]
    if not with_audio:
        return 0
    baseline = with_audio[0]["face_p95_ms"]
    ok = [r["streams"] for r in with_audio if r["face_p95_ms"] <= 2 * baseline]
    return max(ok, default=0)


def measure(
    address: str, counts: list[int], seconds: float, work: Path, metrics_url: str | None = None
) -> list[dict[str, Any]]:
    jpegs = moving_face_frames()
    speech = speech_with_pauses(work)
    # Warm-up: the first calls of each model pay for their first execution.
    asyncio.run(run_row(address, jpegs, speech, 1, 4.0))
    rows = []
    for name, n, sound in [("1 video only", 1, None), *((f"{n} with audio", n, speech) for n in counts)]:
        before = triton_counts(metrics_url)
        result = row(name, n, asyncio.run(run_row(address, jpegs, sound, n, seconds)), seconds)
        result["triton_requests_per_execution"] = batching(before, triton_counts(metrics_url))
        rows.append(result)
        print(table(rows), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="1,2,3", help="stream counts to run, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each row's streams")
    parser.add_argument("--fusion", help="a running fusion service (default: start an ephemeral stack)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/live.json"))
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.streams.split(",") if n.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.fusion:
            rows = measure(args.fusion, counts, args.seconds, work)
        else:
            config = StackConfig.ephemeral(work / "stack", services=("vision", "audio", "text", "fusion"))
            with Stack(config) as stack:
                metrics = f"http://127.0.0.1:{config.triton_ports.metrics}/metrics"
                rows = measure(stack.config.address("fusion"), counts, args.seconds, work, metrics)
    print(table(rows))
    print(f"streams that fit before the face lane's p95 doubles: {fits(rows)}")
    write_results(args.out, {"rows": rows, "fits": fits(rows), "seconds": args.seconds})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
