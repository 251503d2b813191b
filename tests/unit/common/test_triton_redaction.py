"""Triton's errors reach the caller without Triton's address (tritonclient's message names it); the
full message is logged."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from emomesh.errors import DeadlineExceeded, EmomeshError, InvalidInput, Unavailable
from emomesh.triton import _map_error

REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.3.7:8001: "
    "Failed to connect to remote host: Connection refused"
)


@pytest.mark.parametrize(
    ("status", "message", "error", "text"),
    [
        (
            "StatusCode.UNAVAILABLE",
            REFUSED,
            Unavailable,
            "model m is unavailable: failed to connect to all addresses; last error: UNKNOWN: <address>: "
            "Failed to connect to remote host: Connection refused",
        ),
        ("StatusCode.INVALID_ARGUMENT", "unexpected shape for input 'x'", InvalidInput, "model m rejected the input"),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", DeadlineExceeded, "model m did not answer in time"),
    ],
)
def test_triton_errors_are_passed_on_without_addresses(
    status: str, message: str, error: type[EmomeshError], text: str
) -> None:
    mapped = _map_error("m", InferenceServerException(msg=message, status=status))
    assert isinstance(mapped, error)
    assert mapped.message.startswith(text)
    assert "10.0.3.7" not in mapped.message
