"""How Triton's errors become Emomesh errors (and so gRPC statuses for the caller): a missed deadline
is DEADLINE_EXCEEDED, an input Triton rejects is INVALID_ARGUMENT, anything else is UNAVAILABLE."""

from __future__ import annotations

import grpc
import pytest
from tritonclient.utils import InferenceServerException

from emomesh.errors import DeadlineExceeded, EmomeshError, InvalidInput, Unavailable
from emomesh.triton import _map_error


def triton_error(code: grpc.StatusCode | None, details: str) -> InferenceServerException:
    """What tritonclient raises for a failed gRPC call (its status is str() of the gRPC code)."""
    return InferenceServerException(msg=details, status=None if code is None else str(code))


@pytest.mark.parametrize(
    ("error", "expected", "message"),
    [
        (triton_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), DeadlineExceeded, "in time"),
        # A client-side timeout can come without a status, only the message says so.
        (triton_error(None, "Deadline Exceeded"), DeadlineExceeded, "did not answer in time"),
        (
            triton_error(grpc.StatusCode.INVALID_ARGUMENT, "unexpected shape for input 'x'"),
            InvalidInput,
            "rejected the input: unexpected shape for input 'x'",
        ),
        (triton_error(grpc.StatusCode.UNAVAILABLE, "failed to connect"), Unavailable, "unavailable: failed to connect"),
        (triton_error(grpc.StatusCode.NOT_FOUND, "Request for unknown model"), Unavailable, "unknown model"),
        (triton_error(grpc.StatusCode.INTERNAL, "onnxruntime failed"), Unavailable, "unavailable: onnxruntime failed"),
        (triton_error(None, "connection reset"), Unavailable, "unavailable: connection reset"),
    ],
    ids=["deadline", "deadline, no status", "invalid argument", "unavailable", "unknown model", "internal", "other"],
)
def test_triton_errors_map_to_emomesh_errors(
    error: InferenceServerException, expected: type[EmomeshError], message: str
) -> None:
    mapped = _map_error("fer", error)
    assert type(mapped) is expected
    assert mapped.message.startswith("model fer ") and message in mapped.message
