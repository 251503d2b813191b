"""What TLS, mutual TLS and bearer tokens cost per call: a trivial unary RPC (TextService.AnalyzeText
answered at once, no model) through GrpcServer and the shared channel helper, in four modes — plaintext,
TLS, TLS + token, mutual TLS + token — on loopback, client and server in this process.

    python -m bench.bench_security --requests 3000 --rounds 3 --out runs/bench/security.json

Certificates are made with the openssl commands of docs/operations.md ("Security"), so the bench also
proves that they give certificates gRPC accepts. Modes alternate round by round; the median round of
each is reported. Connection set-up (the TLS handshake) happens in the warm-up, so the figures are the
per-call cost on an established channel."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import grpc

from bench.common import closed_loop_async, write_results
from emomesh.config import ServerSettings
from emomesh.procs import free_port
from emomesh.security import ClientSecurity, ClientTls, open_aio_channel
from emomesh.server import GrpcServer
from emotion.text.v1 import text_pb2, text_pb2_grpc

TOKEN = "bench-token-0123456789abcdef"
MODES = ("plaintext", "tls", "tls+token", "mtls+token")


class Instant(text_pb2_grpc.TextServiceServicer):
    async def AnalyzeText(
        self, request: text_pb2.AnalyzeTextRequest, context: grpc.aio.ServicerContext
    ) -> text_pb2.AnalyzeTextResponse:
        return text_pb2.AnalyzeTextResponse()


def make_certificates(directory: Path) -> None:
    """ca.crt, tls.crt and tls.key as docs/operations.md makes them (plus 127.0.0.1 for loopback)."""
    key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    names = "DNS:vision,DNS:audio,DNS:text,DNS:fusion,DNS:dialog,DNS:triton,IP:127.0.0.1"
    for command in (
        f"openssl req -x509 {key} -days 1 -subj /CN=emomesh-ca -keyout ca.key -out ca.crt",
        f"openssl req {key} -subj /CN=emomesh -keyout tls.key -out tls.csr -addext subjectAltName={names}"
        " -addext extendedKeyUsage=serverAuth,clientAuth",
        "openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -copy_extensions copy"
        " -out tls.crt",
    ):
        subprocess.run(command.split(), cwd=directory, check=True, capture_output=True)


def server_env(mode: str, certs: Path, tokens: Path) -> dict[str, str]:
    env = {"EMOMESH_BENCH_LISTEN": f"127.0.0.1:{free_port()}", "EMOMESH_BENCH_METRICS_PORT": "0"}
    if mode != "plaintext":
        env |= {"EMOMESH_BENCH_TLS_CERT": str(certs / "tls.crt"), "EMOMESH_BENCH_TLS_KEY": str(certs / "tls.key")}
    if mode == "mtls+token":
        env["EMOMESH_BENCH_TLS_CLIENT_CA"] = str(certs / "ca.crt")
    if mode.endswith("+token"):
        env["EMOMESH_BENCH_AUTH_TOKENS_FILE"] = str(tokens)
    return env


def client_security(mode: str, certs: Path) -> ClientSecurity:
    if mode == "plaintext":
        return ClientSecurity()
    ca = (certs / "ca.crt").read_bytes()
    if mode == "mtls+token":
        tls = ClientTls(ca, (certs / "tls.crt").read_bytes(), (certs / "tls.key").read_bytes())
    else:
        tls = ClientTls(ca)
    return ClientSecurity(tls, TOKEN if mode.endswith("+token") else None)


async def one_round(mode: str, certs: Path, tokens: Path, requests: int, concurrency: int) -> dict[str, float]:
    servicer = Instant()
    settings = ServerSettings.from_env("bench", 1, server_env(mode, certs, tokens))
    server = GrpcServer(
        "bench",
        settings,
        lambda s: text_pb2_grpc.add_TextServiceServicer_to_server(servicer, s),
        [text_pb2.DESCRIPTOR.services_by_name["TextService"].full_name],
    )
    await server.start()
    try:
        async with open_aio_channel(server.address, client_security(mode, certs)) as channel:
            stub = text_pb2_grpc.TextServiceStub(channel)
            request = text_pb2.AnalyzeTextRequest(text="hello")
            return await closed_loop_async(
                lambda: stub.AnalyzeText(request, timeout=10), concurrency, requests, 60, warmup=20
            )
    finally:
        await server.stop()


async def run(requests: int, rounds: int, concurrency: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp)
        make_certificates(certs)
        tokens = certs / "tokens"
        tokens.write_text(f"bench:{TOKEN}\n")
        results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for _ in range(rounds):
            for mode in MODES:
                results[mode].append(await one_round(mode, certs, tokens, requests, concurrency))
    report: dict[str, object] = {"requests": requests, "rounds": rounds, "concurrency": concurrency}
    for mode, runs in results.items():
        median = sorted(runs, key=lambda r: r["p50_ms"])[len(runs) // 2]
        report[mode] = {**median, "per_s_rounds": [round(r["per_s"]) for r in runs]}
        assert statistics.fmean(r["errors"] for r in runs) == 0, f"{mode}: calls failed"
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="calls per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1, help="calls in flight")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = asyncio.run(run(args.requests, args.rounds, args.concurrency))
    print(json.dumps(report, indent=2))
    write_results(args.out, report)


if __name__ == "__main__":
    main()
