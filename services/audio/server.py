"""Entry point of the audio service: `python -m services.audio.server`."""

from __future__ import annotations

import asyncio

from emomesh.logs import configure_logging
from emomesh.readiness import triton_model_readiness
from emomesh.server import GrpcServer
from emomesh.triton import TritonClient
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from services.audio.asr import Transcriber
from services.audio.config import AudioSettings
from services.audio.model import SpeechEmotionModel
from services.audio.servicer import AudioServicer

SERVICE_NAME = audio_pb2.DESCRIPTOR.services_by_name["AudioService"].full_name


async def build_server(settings: AudioSettings) -> GrpcServer:
    triton = TritonClient(settings.triton)
    model = SpeechEmotionModel(triton, settings.model_name)
    await model.load()
    # Loading Whisper takes a second or two and reads ~75 MB (tiny.en); off the event loop.
    transcriber = await asyncio.to_thread(Transcriber, settings.asr) if settings.asr.enabled else None
    servicer = AudioServicer(settings, model, transcriber)

    async def on_stop() -> None:
        if transcriber is not None:
            transcriber.close()
        await triton.close()

    return GrpcServer(
        "audio",
        settings.server,
        lambda server: audio_pb2_grpc.add_AudioServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
        on_stop=on_stop,
        # Not ready while Triton or the model is not: calls would fail with UNAVAILABLE.
        readiness=triton_model_readiness(triton, [model.name]),
    )


async def serve(settings: AudioSettings) -> None:
    server = await build_server(settings)
    await server.serve_forever()


def main() -> None:
    settings = AudioSettings.from_env()
    configure_logging("audio", settings.server.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
