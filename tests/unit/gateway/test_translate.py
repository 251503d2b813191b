"""The contract's JSON both ways, and gRPC statuses as HTTP statuses."""

from __future__ import annotations

import base64
import json

import grpc
import pytest

from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2
from services.gateway.translate import BadRequest, dumps, http_status, parse, to_json


def test_messages_become_the_protos_json_with_defaults_present() -> None:
    event = fusion_pb2.StreamEvent(
        time_s=1.5,
        faces=fusion_pb2.StreamFaces(frame_index=7, timestamp_s=0.25),
    )
    assert to_json(event) == {
        "time_s": 1.5,
        "faces": {"frame_index": "7", "timestamp_s": 0.25, "faces": [], "latency_ms": 0.0},
    }
    distribution = common_pb2.EmotionDistribution(probabilities=[0.0, 1.0], top=common_pb2.EMOTION_HAPPY)
    assert json.loads(dumps(distribution)) == {"probabilities": [0.0, 1.0], "top": "EMOTION_HAPPY", "confidence": 0.0}


def test_json_bodies_become_messages_with_bytes_from_base64() -> None:
    body = json.dumps({"image": base64.b64encode(b"\xff\xd8jpeg").decode(), "text": "hi", "speaker": "user"})
    request = parse(body.encode(), fusion_pb2.AnalyzeRequest)
    assert (request.image, request.text, request.speaker) == (b"\xff\xd8jpeg", "hi", "user")
    # camelCase, as other proto3 JSON clients write it, is read as well
    assert parse('{"transcriptAsText": false}', fusion_pb2.AnalyzeRequest).HasField("transcript_as_text")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the body is empty: send the JSON of a AnalyzeRequest"),
        (b"\xff\xfe", "the body is not UTF-8"),
        (b"{not json", "not a valid AnalyzeRequest"),
        (b'{"imagez": "AA=="}', 'no field named "imagez"'),
        (b'{"text": 5}', "not a valid AnalyzeRequest"),
        (b'{"image": 12}', "not a valid AnalyzeRequest"),
    ],
)
def test_bodies_that_are_not_the_message_are_bad_requests_that_say_why(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse(body, fusion_pb2.AnalyzeRequest)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.UNAUTHENTICATED, 502),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.DATA_LOSS, 502),
    ],
)
def test_status_codes(code: grpc.StatusCode, status: int) -> None:
    assert http_status(code) == status
