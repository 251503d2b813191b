"""Entry point of the dialog service: `python -m services.dialog.server`."""

from __future__ import annotations

import asyncio
import logging

from emomesh.logs import configure_logging
from emomesh.server import GrpcServer
from emotion.dialog.v1 import dialog_pb2, dialog_pb2_grpc
from services.dialog.config import DialogSettings
from services.dialog.history import HistoryStore
from services.dialog.llm import LlmClient
from services.dialog.prompts import PromptBuilder
from services.dialog.servicer import DialogServicer
from services.dialog.text_emotion import TextEmotionReader

SERVICE_NAME = dialog_pb2.DESCRIPTOR.services_by_name["DialogService"].full_name

log = logging.getLogger(__name__)


def build_server(settings: DialogSettings) -> GrpcServer:
    """Needs neither Redis, the LLM nor the text service to start: all are optional at run time
    (history, replies and the message's emotion degrade), so the service comes up even when they are down."""
    llm = LlmClient(settings.llm)
    history = HistoryStore(settings.history)
    reader = TextEmotionReader(settings.text) if settings.text.address is not None else None
    servicer = DialogServicer(settings, llm, history, PromptBuilder(), reader)
    if not llm.configured:
        log.warning("no LLM API key configured (EMOMESH_DIALOG_LLM_API_KEY): replies are offline fallbacks")

    async def close() -> None:
        await llm.close()
        await history.close()
        if reader is not None:
            await reader.close()

    # No readiness check: dialog answers without Redis (history degrades), without the LLM (offline
    # fallback replies) and without the text service, so it is SERVING whenever it runs (docs/dialog.md).
    return GrpcServer(
        "dialog",
        settings.server,
        lambda server: dialog_pb2_grpc.add_DialogServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
        on_stop=close,
    )


async def serve(settings: DialogSettings) -> None:
    await build_server(settings).serve_forever()


def main() -> None:
    settings = DialogSettings.from_env()
    configure_logging("dialog", settings.server.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
