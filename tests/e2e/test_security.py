"""The embedded stack locked down as in production: every service on mutual TLS with bearer tokens
(one tokens file naming three callers, `fusion`, `gateway` and `app`), fusion calling vision and text with
its client certificate and its own token, the console's gateway calling fusion and vision the same way, and
clients going through TLS with a token — or failing to.

Configured only through the documented environment variables, each service its own process."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from emomesh.procs import grpc_healthy, local_http
from emomesh.security import ClientSecurity, ClientTls, open_channel
from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from emotion.text.v1 import text_pb2, text_pb2_grpc
from tests.pki import Pki, make_pki

pytestmark = pytest.mark.e2e

SERVICES = ("vision", "text", "fusion")
FUSION_TOKEN = "fusion-to-modalities-7f3a9c2e41d8"
APP_TOKEN = "app-backend-token-5b8e1d0c9a7f"
GATEWAY_TOKEN = "gateway-to-services-3d9b7e6a1c40"
TEXT = "Thank you so much, I love it!"
ANSWERED = (common_pb2.MODALITY_STATUS_OK, common_pb2.MODALITY_STATUS_LOW_CONFIDENCE)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def client_tls(pki: Pki) -> ClientTls:
    return ClientTls(pki.ca.read_bytes(), pki.client.cert.read_bytes(), pki.client.key.read_bytes())


def secure_env(pki: Pki, tokens: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in SERVICES:
        prefix = f"EMOMESH_{name.upper()}_"
        env |= {
            f"{prefix}TLS_CERT": str(pki.server.cert),
            f"{prefix}TLS_KEY": str(pki.server.key),
            f"{prefix}TLS_CLIENT_CA": str(pki.ca),
            f"{prefix}AUTH_TOKENS_FILE": str(tokens),
        }
    env |= {
        "EMOMESH_FUSION_OUTBOUND_TLS_CA": str(pki.ca),
        "EMOMESH_FUSION_OUTBOUND_TLS_CERT": str(pki.client.cert),
        "EMOMESH_FUSION_OUTBOUND_TLS_KEY": str(pki.client.key),
        "EMOMESH_FUSION_OUTBOUND_TOKEN": FUSION_TOKEN,
        "EMOMESH_GATEWAY_OUTBOUND_TLS_CA": str(pki.ca),
        "EMOMESH_GATEWAY_OUTBOUND_TLS_CERT": str(pki.client.cert),
        "EMOMESH_GATEWAY_OUTBOUND_TLS_KEY": str(pki.client.key),
        "EMOMESH_GATEWAY_OUTBOUND_TOKEN": GATEWAY_TOKEN,
    }
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pki: Pki, client_tls: ClientTls) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("secure-stack")
    tokens = state / "tokens"
    tokens.write_text(f"fusion:{FUSION_TOKEN}\ngateway:{GATEWAY_TOKEN}\napp:{APP_TOKEN}\n")
    config = StackConfig.ephemeral(state, services=(*SERVICES, "gateway"))
    config.extra_env = secure_env(pki, tokens)
    config.client_tls = client_tls
    with Stack(config) as running:
        yield running


def analyze(stack: Stack, security: ClientSecurity, request: fusion_pb2.AnalyzeRequest) -> fusion_pb2.AnalyzeResponse:
    address = stack.config.address("fusion")
    with open_channel(address, security, grpc_options(64 * 1024 * 1024)) as channel:
        response: fusion_pb2.AnalyzeResponse = fusion_pb2_grpc.FusionServiceStub(channel).Analyze(request, timeout=60)
    return response


def test_analyze_fans_out_over_mutual_tls_with_tokens(
    stack: Stack, client_tls: ClientTls, astronaut_jpeg: bytes
) -> None:
    response = analyze(
        stack, ClientSecurity(client_tls, APP_TOKEN), fusion_pb2.AnalyzeRequest(image=astronaut_jpeg, text=TEXT)
    )
    results = {r.modality: r for r in response.modalities}
    # Fusion reached vision and text through TLS with its own client certificate and token.
    assert results[common_pb2.MODALITY_VISION].status == common_pb2.MODALITY_STATUS_OK
    assert results[common_pb2.MODALITY_VISION].distribution.top == common_pb2.EMOTION_HAPPY
    assert results[common_pb2.MODALITY_TEXT].status in ANSWERED, results[common_pb2.MODALITY_TEXT].detail
    assert results[common_pb2.MODALITY_AUDIO].status == common_pb2.MODALITY_STATUS_MISSING
    assert response.fused.HasField("distribution")


@pytest.mark.parametrize("token", [None, "not-the-token-of-anyone-here"])
def test_analyze_without_a_valid_token_is_unauthenticated(
    stack: Stack, client_tls: ClientTls, token: str | None
) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        analyze(stack, ClientSecurity(client_tls, token), fusion_pb2.AnalyzeRequest(text=TEXT))
    assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    expected = "no credentials" if token is None else "invalid bearer token"
    assert expected in failed.value.details()


@pytest.mark.parametrize("transport", ["plaintext", "TLS without a client certificate"])
def test_clients_without_tls_or_a_client_certificate_cannot_connect(
    stack: Stack, client_tls: ClientTls, transport: str
) -> None:
    tls = None if transport == "plaintext" else ClientTls(client_tls.root_certificates)
    with pytest.raises(grpc.RpcError) as failed:
        analyze(stack, ClientSecurity(tls, APP_TOKEN), fusion_pb2.AnalyzeRequest(text=TEXT))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


def test_modality_services_take_tokens_too_and_health_stays_open(stack: Stack, client_tls: ClientTls) -> None:
    address = stack.config.address("text")
    for name in SERVICES:
        assert grpc_healthy(stack.config.address(name), tls=client_tls), name
    with open_channel(address, ClientSecurity(client_tls)) as channel:
        with pytest.raises(grpc.RpcError) as failed:
            text_pb2_grpc.TextServiceStub(channel).AnalyzeText(text_pb2.AnalyzeTextRequest(text=TEXT), timeout=30)
        assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with open_channel(address, ClientSecurity(client_tls, APP_TOKEN)) as channel:
        response = text_pb2_grpc.TextServiceStub(channel).AnalyzeText(
            text_pb2.AnalyzeTextRequest(text=TEXT), timeout=30
        )
        assert len(response.distribution.probabilities) == 7


def test_emomesh_analyze_reads_tls_and_token_from_the_environment(stack: Stack, pki: Pki) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EMOMESH_")}
    client_env = {
        **base,
        "EMOMESH_CLIENT_TLS_CA": str(pki.ca),
        "EMOMESH_CLIENT_TLS_CERT": str(pki.client.cert),
        "EMOMESH_CLIENT_TLS_KEY": str(pki.client.key),
    }
    command = [
        sys.executable,
        "-m",
        "emomesh.cli",
        "analyze",
        "--fusion",
        stack.config.address("fusion"),
        "--text",
        TEXT,
    ]
    ok = subprocess.run(
        command, env={**client_env, "EMOMESH_CLIENT_TOKEN": APP_TOKEN}, capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert "fused:" in ok.stdout
    refused = subprocess.run(command, env=client_env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr


def test_the_console_gateway_reaches_the_services_over_mutual_tls_with_its_token(
    stack: Stack, astronaut_jpeg: bytes
) -> None:
    assert stack.console_url is not None
    opener = local_http()
    with pytest.raises(urllib.error.HTTPError) as not_ready:  # 503: this stack runs no dialog service
        opener.open(stack.console_url + "readyz", timeout=10)
    readiness = json.load(not_ready.value)
    assert readiness["services"] == {"fusion": "SERVING", "dialog": "NOT_CONFIGURED", "vision": "SERVING"}
    body = json.dumps({"image": base64.b64encode(astronaut_jpeg).decode(), "text": TEXT}).encode()
    request = urllib.request.Request(
        stack.console_url + "api/v1/fusion/analyze", body, {"Content-Type": "application/json"}
    )
    with opener.open(request, timeout=60) as answer:
        response = json.load(answer)
    statuses = {r["modality"]: r["status"] for r in response["modalities"]}
    assert statuses["MODALITY_VISION"] == "MODALITY_STATUS_OK"
    assert response["fused"]["distribution"]["top"] == "EMOTION_HAPPY"
