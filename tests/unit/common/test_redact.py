"""Internal addresses never reach a caller: gRPC peers, URLs, IPs and host:port pairs are scrubbed,
the rest of the message is kept."""

from __future__ import annotations

import pytest

from emomesh.redact import scrub_addresses


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:8001: Connection refused",
            "failed to connect to all addresses; last error: UNKNOWN: <address>: Connection refused",
        ),
        ("ipv6:[::1]:50051: Socket closed", "<address>: Socket closed"),
        ("ipv6:%5B::1%5D:50051: Socket closed", "<address>: Socket closed"),
        ("unix:/run/triton/grpc.sock: No such file", "<address>: No such file"),
        ("peers [ipv4:10.0.0.1:8001, ipv4:10.0.0.2:8001]", "peers [<address>, <address>]"),
        ("dns:///triton.emomesh.svc:8001 unreachable", "<address> unreachable"),
        ("connect to triton:8001 failed", "connect to <address> failed"),
        ("vision.emomesh.svc.cluster.local:50051 refused", "<address> refused"),
        ("localhost:8001 refused", "<address> refused"),
        ("redis://:secret@redis:6379/0 timed out", "<address> timed out"),
        ("POST http://10.2.3.4:8000/v2/models/x/infer: 503", "POST <address>: 503"),
        ("10.4.2.17 is down, 10.4.2.18:9000 too", "<address> is down, <address> too"),
        ("fe80::1 and 2001:db8::ff00:42:8329 and [::1]:80", "<address> and <address> and <address>"),
    ],
)
def test_addresses_are_replaced(text: str, scrubbed: str) -> None:
    assert scrub_addresses(text) == scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "image is 31457280 bytes; the limit is 22020096 bytes",
        "results[0] (vision): distribution probabilities must sum to 1 (within 0.001), they sum to 35",
        "model fer_mini_xception_ft rejected the input: unexpected shape [1, 1, 64, 64]",
        "started at 12:30:00, version 1.2.3",
        "grpc_status:14, std::string",
        "vision service: INVALID_ARGUMENT: image could not be read",
    ],
)
def test_other_text_is_kept(text: str) -> None:
    assert scrub_addresses(text) == text
