"""Entry point of the text service: `python -m services.text.server`."""

from __future__ import annotations

import asyncio

from emomesh.logs import configure_logging
from emomesh.readiness import triton_model_readiness
from emomesh.server import GrpcServer
from emomesh.triton import TritonClient
from emotion.text.v1 import text_pb2, text_pb2_grpc
from services.text import language
from services.text.config import TextSettings
from services.text.model import TritonTextModel
from services.text.servicer import TextServicer
from services.text.tokenize import TextTokenizer
from services.text.translate import translator_from_settings

SERVICE_NAME = text_pb2.DESCRIPTOR.services_by_name["TextService"].full_name


async def build_server(settings: TextSettings) -> GrpcServer:
    triton = TritonClient(settings.triton)
    model = TritonTextModel(triton, settings.model_name)
    await model.load()
    tokenizer = TextTokenizer(settings.tokenizer_path, settings.max_tokens)
    language.warm_up()
    translator = translator_from_settings(settings.translator)
    servicer = TextServicer(settings, model, tokenizer, translator)

    async def close() -> None:
        await translator.close()
        await triton.close()

    return GrpcServer(
        "text",
        settings.server,
        lambda server: text_pb2_grpc.add_TextServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
        on_stop=close,
        # Not ready while Triton or the model is not: calls would fail with UNAVAILABLE.
        readiness=triton_model_readiness(triton, [model.name]),
    )


async def serve(settings: TextSettings) -> None:
    server = await build_server(settings)
    await server.serve_forever()


def main() -> None:
    settings = TextSettings.from_env()
    configure_logging("text", settings.server.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
