"""`emomesh eval` end to end: a generated image folder evaluated through the real vision service and a
real tritonserver serving the shipped FER model; a second run resumes without calling again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest

from emomesh import cli
from emomesh.labels import LABELS, top_label
from emomesh.tritonserver import TritonServer
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.vision.config import VisionSettings
from services.vision.server import build_server
from tests.conftest import service_env, serving


@pytest.fixture
async def vision_address(triton_server: TritonServer) -> AsyncIterator[str]:
    server = await build_server(VisionSettings.from_env(service_env("vision", triton_server)))
    async with serving(server):
        yield server.address


def face_crop_folder(root: Path) -> Path:
    """Six 48x48 gray crops around the astronaut's (smiling) face, FER2013-style, labelled happy and sad."""
    from skimage import data

    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    (root / "images").mkdir(parents=True)
    rows = ["path,label,split"]
    for i in range(6):
        crop = cv2.resize(gray[30 + 3 * i : 210 + 3 * i, 150:320], (48, 48), interpolation=cv2.INTER_AREA)
        name = f"images/face{i}.png"
        cv2.imwrite(str(root / name), crop)
        rows.append(f"{name},{'happy' if i % 2 == 0 else 'sad'},val")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


async def test_emomesh_eval_end_to_end_and_resume(vision_address: str, tmp_path: Path) -> None:
    dataset = face_crop_folder(tmp_path / "faces")
    out = tmp_path / "report"
    argv = [
        "eval",
        str(dataset),
        "--split",
        "val",
        "--address",
        vision_address,
        "--out",
        str(out),
        "--concurrency",
        "3",
    ]
    # The CLI runs its own event loop: give it a thread, this loop keeps serving the vision service.
    assert await asyncio.to_thread(cli.main, argv) == 0

    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [f"images/face{i}.png" for i in range(6)]
    served = VisionSettings.from_env({}).model_name
    assert all(r["status"] == "ok" and r["model"].startswith(f"{served}:") for r in records)
    # The recorded predictions are the service's own answers for the same bytes.
    async with grpc.aio.insecure_channel(vision_address) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        for record in records:
            request = vision_pb2.AnalyzeImageRequest(
                image=(dataset / record["id"]).read_bytes(), whole_image_is_face=True
            )
            response = await stub.AnalyzeImage(request, timeout=30)
            assert record["predicted"] == top_label(response.primary)
            assert np.allclose(record["probabilities"], response.primary.probabilities, atol=1e-5)

    metrics = json.loads((out / "metrics.json").read_text())
    truth = [r["label"] for r in records]
    expected_accuracy = sum(r["predicted"] == r["label"] for r in records) / len(records)
    assert metrics["total"] == 6 and metrics["failed"] == 0 and metrics["face_crops"] is True
    assert metrics["accuracy"] == pytest.approx(expected_accuracy)
    assert metrics["support"] == {label: truth.count(label) for label in LABELS}
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "accuracy: **" in (out / "report.md").read_text()

    # Resume: everything is done, so no line is added; --fresh starts over.
    assert await asyncio.to_thread(cli.main, argv) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 6
    assert await asyncio.to_thread(cli.main, [*argv, "--fresh", "--max-samples", "2"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
