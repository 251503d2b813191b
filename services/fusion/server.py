"""Entry point of the fusion service: `python -m services.fusion.server`."""

from __future__ import annotations

import asyncio

from emomesh.logs import configure_logging
from emomesh.readiness import peers_readiness
from emomesh.server import GrpcServer
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from services.fusion.config import FusionSettings
from services.fusion.orchestrator import ModalityClients, Orchestrator, OrchestratorLimits
from services.fusion.servicer import FusionServicer
from services.fusion.stream import StreamHub

SERVICE_NAME = fusion_pb2.DESCRIPTOR.services_by_name["FusionService"].full_name


def build_server(settings: FusionSettings) -> GrpcServer:
    clients = ModalityClients(
        settings.vision_addr,
        settings.audio_addr,
        settings.text_addr,
        settings.server.max_message_bytes,
        settings.outbound,
    )
    limits = OrchestratorLimits(
        max_deadline_s=settings.max_deadline_s,
        deadline_margin_s=settings.deadline_margin_s,
        deadline_margin_share=settings.deadline_margin_share,
        min_call_budget_s=settings.min_call_budget_s,
        max_request_bytes=settings.max_request_bytes,
        max_text_chars=settings.max_text_chars,
    )
    streams = StreamHub(clients, settings.fusion, settings.stream)
    servicer = FusionServicer(settings.fusion, Orchestrator(clients, settings.fusion, limits), streams)
    return GrpcServer(
        "fusion",
        settings.server,
        lambda server: fusion_pb2_grpc.add_FusionServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
        on_stop=clients.close,
        # Not ready while no modality service is: every Analyze would come back with nothing fused.
        readiness=peers_readiness(clients.channels),
    )


async def serve(settings: FusionSettings) -> None:
    # Built inside the running loop: grpc.aio channels bind to the loop that creates them.
    server = build_server(settings)
    await server.serve_forever()


def main() -> None:
    settings = FusionSettings.from_env()
    configure_logging("fusion", settings.server.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
