"""The shared Triton client over mutual TLS against the real tritonserver started with its own gRPC
TLS options (--grpc-use-ssl-mutual): what EMOMESH_TRITON_TLS_* configure in a deployment where Triton
accepts only services holding a client certificate from the cluster's CA."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from emomesh.config import TritonSettings
from emomesh.errors import Unavailable
from emomesh.procs import free_port
from emomesh.security import ClientTls
from emomesh.triton import TritonClient
from emomesh.triton_repo import RenderOptions, render_repository
from emomesh.tritonserver import TritonPorts, TritonServer
from tests.pki import Pki, make_pki

pytestmark = pytest.mark.integration

MODEL = "fer_mini_xception_ft"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_triton(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TritonServer]:
    """A tritonserver whose gRPC port requires mutual TLS; one small model loaded, to stay light."""
    state = tmp_path_factory.mktemp("triton-tls")
    render_repository(state / "repo", RenderOptions("local"))
    server = TritonServer(
        state / "repo",
        state,
        TritonPorts(free_port(), free_port(), free_port()),
        state / "triton.log",
        extra_args=[
            "--model-control-mode=explicit",
            f"--load-model={MODEL}",
            "--grpc-use-ssl-mutual=true",
            f"--grpc-server-cert={pki.server.cert}",
            f"--grpc-server-key={pki.server.key}",
            f"--grpc-root-cert={pki.ca}",
        ],
    )
    server.start()
    try:
        server.wait_ready(180)
        yield server
    finally:
        server.stop()


def client(server: TritonServer, tls: ClientTls | None) -> TritonClient:
    return TritonClient(TritonSettings(url=server.grpc_url, timeout_s=20, tls=tls))


async def test_the_triton_client_infers_over_mutual_tls(tls_triton: TritonServer, pki: Pki) -> None:
    tls = ClientTls(pki.ca.read_bytes(), pki.client.cert.read_bytes(), pki.client.key.read_bytes())
    triton = client(tls_triton, tls)
    try:
        assert await triton.is_ready(MODEL)
        spec = await triton.model_spec(MODEL)
        faces = np.full((2, *spec.inputs[0].shape), 128, dtype=np.float32)
        result = await triton.infer(MODEL, {spec.inputs[0].name: faces}, [spec.outputs[0].name])
        probabilities = result[spec.outputs[0].name]
        assert probabilities.shape == (2, 7)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    finally:
        await triton.close()


@pytest.mark.parametrize("credentials", ["plaintext", "no client certificate", "certificate from another CA"])
async def test_triton_refuses_clients_without_the_right_credentials(
    tls_triton: TritonServer, pki: Pki, credentials: str
) -> None:
    ca = pki.ca.read_bytes()
    tls = {
        "plaintext": None,
        "no client certificate": ClientTls(ca),
        "certificate from another CA": ClientTls(
            ca, pki.rogue_client.cert.read_bytes(), pki.rogue_client.key.read_bytes()
        ),
    }[credentials]
    triton = client(tls_triton, tls)
    try:
        assert not await triton.is_ready(MODEL)
        with pytest.raises(Unavailable):
            await triton.model_spec(MODEL)
    finally:
        await triton.close()
