"""Builds a prediction cache for the weight search from a SYNTHETIC-PAIRING validation set, with the
real models through the real modality services.

No shared corpus has the same utterance as face + voice + text with one label (MELD's media are not
in the shared data), so samples of the SAME LABEL from three single-modality validation sets are
paired: for each label, the i-th FER2013 val face, the i-th held-out RAVDESS clip and the i-th
single-label GoEmotions dev sentence of that label form one "sample". This measures how to weight
the three models' outputs when each is right or wrong independently; it cannot capture how real
modalities of one person correlate, so treat the weights as a prior, not a tuned optimum.

    emomesh up &   # or any running stack
    python -m services.fusion.build_cache --data /work/shared/data --out runs/fusion/val_cache.jsonl \
        --vision 127.0.0.1:50051 --audio 127.0.0.1:50052 --text 127.0.0.1:50053
    python -m services.fusion.build_cache --data /work/shared/data --out runs/fusion/val_cache.jsonl --stack

A modality without an address (or whose service fails on a sample) is null in that row; the search
then renormalises over the rest, exactly as the service does.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from emomesh.evaluation.adapters import goemotions
from emomesh.labels import LABELS, probs_from_distribution
from emomesh.server import grpc_options
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from emotion.text.v1 import text_pb2, text_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc

# The audio model's speaker-disjoint validation actors (services/audio/train.py DEFAULT_VAL_SPEAKERS).
DEFAULT_AUDIO_SPEAKERS = "ravdess_actor17,ravdess_actor18,ravdess_actor19,ravdess_actor20"


@dataclass(frozen=True)
class Item:
    source: str  # path or text, for the record
    payload: Path | str


def fer_val(data: Path) -> dict[str, list[Item]]:
    pools: dict[str, list[Item]] = {label: [] for label in LABELS}
    with (data / "fer2013" / "labels.csv").open() as f:
        for row in csv.DictReader(f):
            if row["split"] == "val":
                pools[row["label"]].append(Item(row["path"], data / "fer2013" / row["path"]))
    return pools


def ravdess(data: Path, speakers: set[str]) -> dict[str, list[Item]]:
    pools: dict[str, list[Item]] = {label: [] for label in LABELS}
    with (data / "ravdess" / "labels.csv").open() as f:
        for row in csv.DictReader(f):
            if row["speaker"] in speakers:
                pools[row["label"]].append(Item(row["path"], data / "ravdess" / row["path"]))
    return pools


def goemotions_dev(data: Path) -> dict[str, list[Item]]:
    """Single-class dev sentences, mapped to the 7 classes through the Ekman grouping (the evaluation
    adapter's reading of GoEmotions)."""
    pools: dict[str, list[Item]] = {label: [] for label in LABELS}
    for sample in goemotions(data / "goemotions", "dev"):
        assert sample.text is not None, "the text adapters give every sample its text"
        pools[sample.label].append(Item(sample.text, sample.text))
    return pools


def pair(pools: dict[str, dict[str, list[Item]]], per_label: int, seed: int) -> list[tuple[str, dict[str, Item]]]:
    """Up to per_label samples per label, each one item of that label from every modality's pool."""
    rng = random.Random(seed)
    samples: list[tuple[str, dict[str, Item]]] = []
    for label in LABELS:
        shuffled = {m: rng.sample(p.get(label, []), len(p.get(label, []))) for m, p in pools.items()}
        count = min([per_label, *(len(s) for s in shuffled.values())])
        samples.extend((label, {m: s[i] for m, s in shuffled.items()}) for i in range(count))
    return samples


class Predictor:
    """Calls the modality services (one channel each) and returns normalised 7-vectors."""

    def __init__(self, addresses: dict[str, str | None], timeout_s: float) -> None:
        options = grpc_options(64 * 1024 * 1024)
        self.channels = {m: grpc.aio.insecure_channel(a, options=options) for m, a in addresses.items() if a}
        self.timeout_s = timeout_s
        self.calls: dict[str, Callable[[Item], Awaitable[list[float] | None]]] = {}
        if "vision" in self.channels:
            vision = vision_pb2_grpc.VisionServiceStub(self.channels["vision"])

            async def see(item: Item) -> list[float] | None:
                image = await asyncio.to_thread(Path(item.payload).read_bytes)
                request = vision_pb2.AnalyzeImageRequest(image=image, whole_image_is_face=True)
                response = await vision.AnalyzeImage(request, timeout=self.timeout_s)
                return probs_from_distribution(response.primary).tolist() if response.HasField("primary") else None

            self.calls["vision"] = see
        if "audio" in self.channels:
            audio = audio_pb2_grpc.AudioServiceStub(self.channels["audio"])

            async def hear(item: Item) -> list[float] | None:
                clip = await asyncio.to_thread(Path(item.payload).read_bytes)
                response = await audio.AnalyzeAudio(audio_pb2.AnalyzeAudioRequest(audio=clip), timeout=self.timeout_s)
                return probs_from_distribution(response.distribution).tolist()

            self.calls["audio"] = hear
        if "text" in self.channels:
            text = text_pb2_grpc.TextServiceStub(self.channels["text"])

            async def read(item: Item) -> list[float] | None:
                request = text_pb2.AnalyzeTextRequest(text=str(item.payload))
                response = await text.AnalyzeText(request, timeout=self.timeout_s)
                return probs_from_distribution(response.distribution).tolist()

            self.calls["text"] = read

    async def predict(self, modality: str, item: Item) -> list[float] | None:
        if modality not in self.calls:
            return None
        try:
            return await self.calls[modality](item)
        except grpc.aio.AioRpcError as err:
            print(f"  {modality} failed on {item.source}: {err.code().name} {err.details()}")
            return None

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


async def build(
    samples: list[tuple[str, dict[str, Item]]], addresses: dict[str, str | None], concurrency: int
) -> tuple[list[dict[str, object]], dict[str, float]]:
    predictor = Predictor(addresses, timeout_s=60)
    limit = asyncio.Semaphore(concurrency)
    seconds: dict[str, float] = dict.fromkeys(predictor.calls, 0.0)

    async def one(label: str, items: dict[str, Item]) -> dict[str, object]:
        row: dict[str, object] = {"label": label}
        async with limit:
            for modality, item in items.items():
                start = time.perf_counter()
                row[modality] = await predictor.predict(modality, item)
                if modality in seconds:
                    seconds[modality] += time.perf_counter() - start
                row[f"{modality}_source"] = item.source
        return row

    try:
        rows = await asyncio.gather(*(one(label, items) for label, items in samples))
    finally:
        await predictor.close()
    return list(rows), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the shared data folder (never copied)")
    parser.add_argument("--out", type=Path, required=True, help="JSONL cache to write")
    parser.add_argument("--per-label", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--audio-speakers", default=DEFAULT_AUDIO_SPEAKERS, help="held-out RAVDESS speakers")
    parser.add_argument("--vision", help="vision service address")
    parser.add_argument("--audio", help="audio service address")
    parser.add_argument("--text", help="text service address")
    parser.add_argument("--stack", action="store_true", help="start an ephemeral embedded stack for the run")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    pools = {
        "vision": fer_val(args.data),
        "audio": ravdess(args.data, set(args.audio_speakers.split(","))),
        "text": goemotions_dev(args.data),
    }
    samples = pair(pools, args.per_label, args.seed)
    print(f"{len(samples)} synthetic samples ({args.per_label} per label at most)")
    addresses: dict[str, str | None] = {"vision": args.vision, "audio": args.audio, "text": args.text}
    if args.stack:
        from emomesh.stack import SERVICES, Stack, StackConfig

        wanted = tuple(s.name for s in SERVICES if s.name in pools)
        with (
            tempfile.TemporaryDirectory() as state,
            Stack(StackConfig.ephemeral(Path(state), services=wanted)) as stack,
        ):
            addresses = {m: stack.config.address(m) if m in wanted else None for m in pools}
            rows, seconds = asyncio.run(build(samples, addresses, args.concurrency))
    else:
        rows, seconds = asyncio.run(build(samples, addresses, args.concurrency))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    used = ", ".join(f"{m} {s:.1f}s" for m, s in seconds.items()) or "none"
    print(f"wrote {args.out}; modalities predicted: {used}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
