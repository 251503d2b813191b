"""The gateway's entry point: HTTPS with its own certificate (what a phone's camera needs), and a stop that
turns readiness off before it closes."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp

from emomesh.procs import free_port
from services.gateway.config import GatewaySettings
from services.gateway.server import serve
from tests.pki import make_pki


async def test_serves_the_console_over_https_with_its_certificate_and_stops(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    settings = GatewaySettings.from_env(
        {
            "EMOMESH_GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "EMOMESH_GATEWAY_METRICS_PORT": "0",
            "EMOMESH_GATEWAY_TLS_CERT": str(pki.server.cert),
            "EMOMESH_GATEWAY_TLS_KEY": str(pki.server.key),
        }
    )
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop))
    trusted = ssl.create_default_context(cafile=str(pki.ca))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"https://127.0.0.1:{port}/", ssl=trusted) as page:
                        assert page.status == 200
                        assert "<html" in (await page.text()).lower()
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the gateway did not start")
            # plain HTTP on the HTTPS port gets no page
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as plain:
                    assert plain.status == 400
            except aiohttp.ClientError:
                pass
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
