"""Entry point of the console gateway: `python -m services.gateway.server`.

Serves the console and its JSON/WebSocket API over HTTP (HTTPS with EMOMESH_GATEWAY_TLS_CERT/KEY), metrics on
their own port; on SIGTERM or SIGINT readiness turns false, live streams are told that they end, and requests in
progress get EMOMESH_GATEWAY_GRACE_S to finish."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from emomesh.logs import configure_logging
from emomesh.metrics import start_metrics_server
from emomesh.tracing import start_tracing
from services.gateway.app import Gateway
from services.gateway.config import GatewaySettings

log = logging.getLogger(__name__)


def ssl_context(settings: GatewaySettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def serve(settings: GatewaySettings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stop_tracing = start_tracing("gateway", settings.tracing)
    gateway = Gateway(settings)
    # No access log: the metrics count every request by route and status, and errors are logged where they happen.
    runner = web.AppRunner(gateway.app(), access_log=None, handle_signals=False, shutdown_timeout=settings.grace_s)
    await runner.setup()
    tls = ssl_context(settings)
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=tls)
    await site.start()
    start_metrics_server(settings.metrics_port, settings.metrics_host)
    scheme = "https" if tls else "http"
    log.info(
        "gateway serving",
        extra={
            "fields": {
                "console": f"{scheme}://{settings.listen}/",
                "metrics_port": settings.metrics_port,
                "upstreams": {name: u.address for name, u in settings.upstreams.items()},
            }
        },
    )
    try:
        await stop.wait()
    finally:
        log.info("gateway stopping", extra={"fields": {"grace_s": settings.grace_s}})
        gateway.shutting_down = True
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if stop_tracing is not None:
            stop_tracing()


def main() -> None:
    settings = GatewaySettings.from_env()
    configure_logging("gateway", settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
