"""AnalyzeVideo, AnalyzeImages batching and face-crop input against the real tritonserver and the real
converted FER model, with videos made by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as triton_aio

from emomesh.labels import LABELS
from emomesh.tritonserver import TritonServer
from emotion.common.v1 import common_pb2
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.vision.config import VisionSettings
from services.vision.server import build_server
from tests.conftest import encode, service_env, serving
from tests.video_media import astronaut_bgr, encode_video, face_video, scene

pytestmark = pytest.mark.integration

# The default model of VisionSettings: Triton statistics are read for it.
MODEL = VisionSettings.from_env({}).model_name


@asynccontextmanager
async def vision_stub(triton: TritonServer, **overrides: str) -> AsyncIterator[vision_pb2_grpc.VisionServiceStub]:
    server = await build_server(VisionSettings.from_env(service_env("vision", triton, **overrides)))
    async with serving(server) as channel:
        yield vision_pb2_grpc.VisionServiceStub(channel)


@pytest.fixture
async def vision(triton_server: TritonServer) -> AsyncIterator[vision_pb2_grpc.VisionServiceStub]:
    async with vision_stub(triton_server) as stub:
        yield stub


async def model_counts(triton: TritonServer, model_name: str = MODEL) -> tuple[int, int]:
    """(inferences, model executions) so far, from Triton's own statistics."""
    client = triton_aio.InferenceServerClient(triton.grpc_url)
    try:
        stats = await client.get_inference_statistics(model_name, as_json=True, client_timeout=10)
    finally:
        await client.close()
    model = stats["model_stats"][0]
    return int(model.get("inference_count", 0)), int(model.get("execution_count", 0))


async def counts_after(triton: TritonServer, faces_before: int, faces: int, model_name: str = MODEL) -> tuple[int, int]:
    """model_counts once Triton has accounted for `faces` more inferences: its statistics are updated
    after the response leaves, so they can lag the call by a moment."""
    counts = await model_counts(triton, model_name)
    for _ in range(50):
        if counts[0] - faces_before >= faces:
            break
        await asyncio.sleep(0.1)
        counts = await model_counts(triton, model_name)
    return counts


def probs(distribution: common_pb2.EmotionDistribution) -> np.ndarray:
    return np.array(distribution.probabilities)


async def test_video_tracks_one_face_and_reports_faceless_frames(
    vision: vision_pb2_grpc.VisionServiceStub, triton_server: TritonServer
) -> None:
    # 20 frames at 10 fps; uniform 8 samples frames 1,3,6,8,11,13,16,18 and frame 6 has no face.
    video = face_video(20, faceless=(5, 6))
    faces_before, executions_before = await model_counts(triton_server)
    response = await vision.AnalyzeVideo(vision_pb2.AnalyzeVideoRequest(video=video), timeout=60)
    faces_after, executions_after = await counts_after(triton_server, faces_before, 7)

    assert response.frames_sampled == 8
    assert [f.index for f in response.frames] == [1, 3, 6, 8, 11, 13, 16, 18]
    assert response.frames_without_faces == 1
    assert [len(f.faces) for f in response.frames] == [1, 1, 0, 1, 1, 1, 1, 1]
    assert response.duration_s == pytest.approx(2.0)
    assert response.frames[1].timestamp_s == pytest.approx(0.3)
    # The astronaut moves 2 px per frame: one track through every frame with a face.
    assert {face.track_id for f in response.frames for face in f.faces} == {1}
    assert [(t.track_id, t.frames_seen) for t in response.tracks] == [(1, 7)]
    # The clip aggregate is the mean over the 7 frames with a face, not over all 8.
    per_frame = np.stack([probs(f.faces[0].distribution) for f in response.frames if f.faces])
    np.testing.assert_allclose(probs(response.aggregate), per_frame.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(probs(response.tracks[0].distribution), per_frame.mean(axis=0), atol=1e-5)
    assert response.aggregate.top == common_pb2.EMOTION_HAPPY
    assert response.model.name == MODEL
    # All 7 faces of the clip went to Triton in one batch.
    assert (faces_after - faces_before, executions_after - executions_before) == (7, 1)


async def test_sampled_frames_are_detected_in_one_triton_execution(
    vision: vision_pb2_grpc.VisionServiceStub, triton_server: TritonServer
) -> None:
    # Faces large enough for BlazeFace's whole-frame pass (no tiles): 8 frames, one detector batch.
    face = astronaut_bgr(300)
    frames = []
    for i in range(12):
        frame = np.full((320, 400, 3), 200, np.uint8)
        frame[10:310, 10 + 4 * i : 310 + 4 * i] = face
        frames.append(frame)
    detector = VisionSettings.from_env({}).detector_model
    before, executions_before = await model_counts(triton_server, detector)
    request = vision_pb2.AnalyzeVideoRequest(video=encode_video(frames, fps=12), uniform_frames=8)
    response = await vision.AnalyzeVideo(request, timeout=60)
    after, executions_after = await counts_after(triton_server, before, 8, detector)
    assert response.frames_sampled == 8 and response.frames_without_faces == 0
    assert (after - before, executions_after - executions_before) == (8, 1)
    # Every face carries BlazeFace's keypoints, eyes inside the box, the right eye on the image's left.
    for frame in response.frames:
        (found,) = frame.faces
        box, eyes = found.box, found.keypoints
        assert found.detection_score > 0.5 and found.HasField("keypoints")
        assert box.x < eyes.right_eye.x < eyes.left_eye.x < box.x + box.width
        assert box.y < eyes.right_eye.y < eyes.nose_tip.y < eyes.mouth.y < box.y + box.height


async def test_two_faces_get_two_tracks(vision: vision_pb2_grpc.VisionServiceStub) -> None:
    face = astronaut_bgr(300)
    frames = []
    for i in range(6):
        # Two people walking towards each other, 2 px per frame each.
        frame = np.full((320, 700, 3), 200, np.uint8)
        frame[10:310, 10 + 2 * i : 310 + 2 * i] = face
        frame[10:310, 380 - 2 * i : 680 - 2 * i] = face
        frames.append(frame)
    request = vision_pb2.AnalyzeVideoRequest(video=encode_video(frames, fps=6), every_nth_frame=1)
    response = await vision.AnalyzeVideo(request, timeout=60)
    assert response.frames_sampled == 6 and response.frames_without_faces == 0
    assert sorted((t.track_id, t.frames_seen) for t in response.tracks) == [(1, 6), (2, 6)]
    for frame in response.frames:
        left, right = sorted(frame.faces, key=lambda f: f.box.x)
        assert left.box.x < 350 < right.box.x
    ids_by_side = {(f.box.x < 350, f.track_id) for frame in response.frames for f in frame.faces}
    assert len(ids_by_side) == 2  # each side keeps its own id in every frame


async def test_webm_with_stride_sampling(vision: vision_pb2_grpc.VisionServiceStub) -> None:
    request = vision_pb2.AnalyzeVideoRequest(video=face_video(20, fmt="webm"), stride_seconds=0.5)
    response = await vision.AnalyzeVideo(request, timeout=60)
    assert [f.index for f in response.frames] == [0, 5, 10, 15]
    assert [round(f.timestamp_s, 3) for f in response.frames] == [0.0, 0.5, 1.0, 1.5]
    assert response.frames_without_faces == 0 and len(response.tracks) == 1


async def test_frame_sequence_and_a_video_without_faces(vision: vision_pb2_grpc.VisionServiceStub) -> None:
    images = [encode(scene(i)) for i in range(6)]
    request = vision_pb2.AnalyzeVideoRequest(frames=vision_pb2.FrameSequence(images=images, fps=3.0), every_nth_frame=2)
    response = await vision.AnalyzeVideo(request, timeout=60)
    assert [(f.index, round(f.timestamp_s, 3)) for f in response.frames] == [(0, 0.0), (2, 0.667), (4, 1.333)]
    assert response.duration_s == pytest.approx(2.0)
    assert len(response.tracks) == 1 and response.aggregate.top == common_pb2.EMOTION_HAPPY

    faceless = vision_pb2.AnalyzeVideoRequest(video=face_video(6, faceless=tuple(range(6))))
    response = await vision.AnalyzeVideo(faceless, timeout=60)
    assert response.frames_sampled == 6 and response.frames_without_faces == 6
    assert not response.HasField("aggregate") and len(response.tracks) == 0


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"video": b"this is not a video at all" * 50}, "not a video file"),
        ({"video": b""}, "video is empty"),
        ({}, "set either video"),
        ({"video": b"x", "uniform_frames": 0}, "uniform_frames must be between 1"),
        ({"video": b"x", "every_nth_frame": -2}, "every_nth_frame must be >= 1"),
        ({"frames": {"images": [encode(scene(0)), encode(scene(1, width=320, height=240))]}}, "same size"),
        ({"frames": {"images": [encode(scene(0)), b"junk"]}, "every_nth_frame": 1}, "frames.images[1]"),
        ({"frames": {"images": [encode(scene(0))]}, "stride_seconds": 1.0}, "needs frames.fps"),
    ],
    ids=["not-a-video", "zero-length", "no-source", "zero-frames", "negative-nth", "mixed-sizes", "bad-frame", "fps"],
)
async def test_bad_video_input_is_invalid_argument_and_the_service_keeps_serving(
    vision: vision_pb2_grpc.VisionServiceStub, request_fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await vision.AnalyzeVideo(vision_pb2.AnalyzeVideoRequest(**request_fields), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")
    ok = await vision.AnalyzeVideo(vision_pb2.AnalyzeVideoRequest(video=face_video(4)), timeout=60)
    assert ok.frames_sampled == 4


async def test_upload_over_the_message_limit_is_refused_before_it_is_read(triton_server: TritonServer) -> None:
    # Stands in for a 4 GB upload: gRPC refuses any message over EMOMESH_VISION_MAX_MESSAGE_BYTES
    # from its length prefix, before the servicer (or protobuf) sees a byte of it.
    async with vision_stub(triton_server, EMOMESH_VISION_MAX_MESSAGE_BYTES="65536") as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AnalyzeVideo(vision_pb2.AnalyzeVideoRequest(video=b"\0" * 70_000), timeout=60)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ok = await stub.AnalyzeVideo(vision_pb2.AnalyzeVideoRequest(video=face_video(4)), timeout=60)
        assert ok.frames_sampled == 4


async def test_too_many_sampled_frames_is_refused(triton_server: TritonServer) -> None:
    async with vision_stub(triton_server, EMOMESH_VISION_MAX_VIDEO_FRAMES="4") as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AnalyzeVideo(vision_pb2.AnalyzeVideoRequest(video=face_video(10), every_nth_frame=1), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "more than 4 frames" in (err.value.details() or "")


def face_crop(side: int = 48) -> bytes:
    """A tight face crop, as in FER2013: too tight for the detector."""
    gray = cv2.cvtColor(astronaut_bgr(512), cv2.COLOR_BGR2GRAY)
    return encode(cv2.resize(gray[40:200, 160:310], (side, side), interpolation=cv2.INTER_AREA), ".png")


async def test_whole_image_is_face_classifies_crops_the_detector_misses(
    vision: vision_pb2_grpc.VisionServiceStub,
) -> None:
    crop = face_crop()
    detected = await vision.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=crop), timeout=30)
    assert len(detected.faces) == 0
    whole = await vision.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=crop, whole_image_is_face=True), timeout=30)
    assert len(whole.faces) == 1
    box = whole.faces[0].box
    assert (box.x, box.y, box.width, box.height) == (0, 0, 48, 48)
    assert LABELS[int(np.argmax(probs(whole.primary)))] == "happy"


async def test_batch_of_crops_is_one_triton_execution_and_matches_single_calls(
    vision: vision_pb2_grpc.VisionServiceStub, triton_server: TritonServer
) -> None:
    crops = [face_crop(side) for side in (48, 56, 64, 72, 80)]
    singles = [
        await vision.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=c, whole_image_is_face=True), timeout=30)
        for c in crops
    ]
    faces_before, executions_before = await model_counts(triton_server)
    batch = await vision.AnalyzeImages(
        vision_pb2.AnalyzeImagesRequest(
            images=[vision_pb2.AnalyzeImageRequest(image=c, whole_image_is_face=True) for c in crops]
        ),
        timeout=30,
    )
    faces_after, executions_after = await counts_after(triton_server, faces_before, 5)
    assert (faces_after - faces_before, executions_after - executions_before) == (5, 1)
    for single, result in zip(singles, batch.results, strict=True):
        np.testing.assert_allclose(probs(single.primary), probs(result.primary), atol=1e-5)


def chunks(data: bytes, size: int, **sampling: Any) -> Iterator[vision_pb2.VideoChunk]:
    for offset in range(0, len(data), size):
        yield vision_pb2.VideoChunk(data=data[offset : offset + size], **(sampling if offset == 0 else {}))


async def test_streamed_upload_matches_the_single_message_call(vision: vision_pb2_grpc.VisionServiceStub) -> None:
    video = face_video(20, faceless=(5, 6))
    unary = await vision.AnalyzeVideo(vision_pb2.AnalyzeVideoRequest(video=video, uniform_frames=5), timeout=60)
    streamed = await vision.AnalyzeVideoStream(chunks(video, 4096, uniform_frames=5), timeout=60)
    assert streamed.frames_sampled == 5
    assert [f.index for f in streamed.frames] == [f.index for f in unary.frames]
    np.testing.assert_allclose(probs(streamed.aggregate), probs(unary.aggregate), atol=1e-6)
    assert [(t.track_id, t.frames_seen) for t in streamed.tracks] == [(t.track_id, t.frames_seen) for t in unary.tracks]


async def test_streamed_upload_over_the_video_limit_is_resource_exhausted(triton_server: TritonServer) -> None:
    async with vision_stub(triton_server, EMOMESH_VISION_MAX_VIDEO_BYTES="10000") as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AnalyzeVideoStream(chunks(b"\0" * 50_000, 4096), timeout=60)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "passed 10000 bytes" in (err.value.details() or "")
        for payload, message in ((b"", "no chunks"), (b"not a video" * 100, "not a video file")):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.AnalyzeVideoStream(chunks(payload, 4096), timeout=60)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AnalyzeVideoStream(chunks(face_video(4), 4096, every_nth_frame=0), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
