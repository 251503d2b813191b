"""Entry point of the vision service: `python -m services.vision.server`."""

from __future__ import annotations

import asyncio

from emomesh.logs import configure_logging
from emomesh.readiness import triton_model_readiness
from emomesh.server import GrpcServer
from emomesh.triton import TritonClient
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.vision.blazeface import BlazeFaceDetector, BlazeFaceModel
from services.vision.config import VisionSettings
from services.vision.faces import FaceDetector, HaarFaceDetector
from services.vision.model import ExpressionModel
from services.vision.servicer import VisionServicer

SERVICE_NAME = vision_pb2.DESCRIPTOR.services_by_name["VisionService"].full_name


async def build_detector(settings: VisionSettings, triton: TritonClient) -> FaceDetector:
    """The detector EMOMESH_VISION_DETECTOR names; BlazeFace's model is checked on Triton at start."""
    if settings.detector == "haar":
        return HaarFaceDetector(settings.min_face_px, settings.detect_max_side)
    model = BlazeFaceModel(triton, settings.detector_model)
    await model.load()
    return BlazeFaceDetector(model, settings.min_face_px, settings.detect_min_score, settings.detect_tiling)


async def build_server(settings: VisionSettings) -> GrpcServer:
    triton = TritonClient(settings.triton)
    model = ExpressionModel(triton, settings.model_name)
    await model.load()
    servicer = VisionServicer(settings, model, await build_detector(settings, triton))
    # The detector's model counts too when BlazeFace (on Triton) finds the faces.
    served = [model.name] if settings.detector == "haar" else [model.name, settings.detector_model]
    return GrpcServer(
        "vision",
        settings.server,
        lambda server: vision_pb2_grpc.add_VisionServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
        on_stop=triton.close,
        # Not ready while Triton or a model is not: calls would fail with UNAVAILABLE.
        readiness=triton_model_readiness(triton, served),
    )


async def serve(settings: VisionSettings) -> None:
    server = await build_server(settings)
    await server.serve_forever()


def main() -> None:
    settings = VisionSettings.from_env()
    configure_logging("vision", settings.server.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
