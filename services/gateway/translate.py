"""HTTP/JSON <-> gRPC, and nothing else: the proto3 JSON mapping of the contract's messages, and gRPC
status codes as HTTP statuses. Pure functions, so the console's JSON is exactly the contract's."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

# A gRPC status as the HTTP status a browser (or curl) expects. UNAUTHENTICATED and PERMISSION_DENIED
# come from a service refusing the *gateway's* token: the gateway is misconfigured, not the browser.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAUTHENTICATED: 502,
    grpc.StatusCode.PERMISSION_DENIED: 502,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class BadRequest(ValueError):
    """A request body that is not the JSON of the message the route takes."""


def to_json(message: Message) -> dict[str, Any]:
    """A message as the contract's JSON: field names as in the .proto, enums by name, bytes as base64,
    int64 as strings, and fields left at their defaults present (a 0.0 probability is still a bar)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def compact(data: Any) -> str:
    """JSON text without spaces, non-ASCII kept as it is: how every answer of the gateway is written."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def dumps(message: Message) -> str:
    return compact(to_json(message))


def parse(body: bytes | str, message_type: type[M]) -> M:
    """The message that a JSON body stands for; BadRequest names the message and what is wrong."""
    name = message_type.DESCRIPTOR.name
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise BadRequest(f"the body is empty: send the JSON of a {name}")
    try:
        return json_format.Parse(text, message_type())
    except json_format.ParseError as exc:
        raise BadRequest(f"the body is not a valid {name}: {exc}") from None


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500 if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) else 502)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
