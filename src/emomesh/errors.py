"""Errors that carry their gRPC status. Servicers raise these; the server interceptor turns them
into a status code and a message for the caller, so no servicer formats statuses by hand."""

from __future__ import annotations

import grpc


class EmomeshError(Exception):
    """Base class: an error with a gRPC status code and a message safe to show the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(EmomeshError):
    """The request is malformed: corrupt image, undecodable audio, bad UTF-8, unknown persona..."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class TooLarge(EmomeshError):
    """The request exceeds a configured size limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Overloaded(EmomeshError):
    """The service holds as many requests as it may (emomesh.admission); the caller should retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotFound(EmomeshError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(EmomeshError):
    """A dependency (Triton, Redis, another service) cannot be reached."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(EmomeshError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(EmomeshError):
    code = grpc.StatusCode.UNIMPLEMENTED
