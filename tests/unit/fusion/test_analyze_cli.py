"""`emomesh analyze` helpers for FusionService.Analyze: request building and the printed summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from emomesh.analyze_cli import build_request, format_response
from emomesh.labels import distribution_from_probs
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2


def test_request_carries_every_given_modality(tmp_path: Path) -> None:
    image, audio = tmp_path / "a.jpg", tmp_path / "a.wav"
    image.write_bytes(b"jpeg")
    audio.write_bytes(b"wav")
    request = build_request(image=image, audio=audio, text="hi", transcript_as_text=False)
    assert (request.image, request.audio, request.text, request.transcript_as_text) == (b"jpeg", b"wav", "hi", False)


def test_request_needs_something_and_one_visual(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to analyse"):
        build_request()
    path = tmp_path / "x"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="not both"):
        build_request(image=path, video=path)


def test_summary_shows_fusion_conflict_and_each_modality() -> None:
    happy = distribution_from_probs([0, 0, 0, 1, 0, 0, 0])
    response = fusion_pb2.AnalyzeResponse(latency_ms=12.5)
    response.fused.distribution.CopyFrom(happy)
    response.fused.weights.add(modality=common_pb2.MODALITY_VISION, weight=1.0)
    response.fused.polarity = common_pb2.POLARITY_POSITIVE
    response.fused.conflict = True
    response.fused.conflict_detail = "vision happy vs text angry"
    response.modalities.add(
        modality=common_pb2.MODALITY_VISION, status=common_pb2.MODALITY_STATUS_OK, distribution=happy, reliability=1
    )
    response.modalities.add(
        modality=common_pb2.MODALITY_AUDIO, status=common_pb2.MODALITY_STATUS_TIMED_OUT, detail="too slow"
    )
    text = format_response(response)
    assert "fused: happy (100%), polarity positive, weights vision 1.00" in text
    assert "conflict: vision happy vs text angry" in text
    assert "audio  timed_out" in text and "(too slow)" in text


def test_summary_without_any_usable_modality() -> None:
    assert "no modality could be used" in format_response(fusion_pb2.AnalyzeResponse())
