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
from services.text.servicer import TextReader, TextServicer
from services.text.tokenize import TextTokenizer
from services.text.translate import translator_from_settings

SERVICE_NAME = text_pb2.DESCRIPTOR.services_by_name["TextService"].full_name


async def _load_readers(settings: TextSettings, triton: TritonClient) -> tuple[TextReader, TextReader | None]:
    """The English model and, when configured, the multilingual one, each checked on Triton."""
    model = TritonTextModel(triton, settings.model_name)
    await model.load()
    english = TextReader(model, TextTokenizer(settings.tokenizer_path, settings.max_tokens, model.context_tokens))
    if settings.multilingual is None:
        return english, None
    # Configured means required: a model Triton lacks (or a malformed reliability parameter) fails the
    # start, as the English model does; EMOMESH_TEXT_MULTILINGUAL_MODEL="" turns it off.
    second = TritonTextModel(triton, settings.multilingual.model_name)
    await second.load()
    tokenizer = TextTokenizer(
        settings.multilingual.tokenizer_path, settings.multilingual.max_tokens, second.context_tokens
    )
    return english, TextReader(second, tokenizer)


async def build_server(settings: TextSettings) -> GrpcServer:
    triton = TritonClient(settings.triton)
    try:
        english, multilingual = await _load_readers(settings, triton)
    except BaseException:
        await triton.close()
        raise
    models = [reader.model.info.name for reader in (english, multilingual) if reader is not None]
    language.warm_up()
    translator = translator_from_settings(settings.translator)
    servicer = TextServicer(settings, english, translator, multilingual)

    async def close() -> None:
        await translator.close()
        await triton.close()

    return GrpcServer(
        "text",
        settings.server,
        lambda server: text_pb2_grpc.add_TextServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
        on_stop=close,
        # Not ready while Triton or one of the models is not: calls would fail with UNAVAILABLE.
        readiness=triton_model_readiness(triton, models),
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
