"""`emomesh analyze` helpers for FusionService.Analyze: request building, the printed summary with
every face, track, window and transcript, and the JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emomesh.analyze_cli import build_request, format_response, response_json, sparkline
from emomesh.labels import distribution_from_probs
from emotion.audio.v1 import audio_pb2
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2
from emotion.text.v1 import text_pb2
from emotion.vision.v1 import vision_pb2


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


def _dist(top: int, confidence: float = 0.9) -> common_pb2.EmotionDistribution:
    """A distribution with `confidence` on label index top and the rest spread evenly."""
    rest = (1 - confidence) / 6
    return distribution_from_probs([confidence if i == top else rest for i in range(7)])


HAPPY, SAD, NEUTRAL = 3, 4, 6


def test_sparkline_spans_eight_levels_and_marks_gaps() -> None:
    assert sparkline([0.0, 0.5, 1.0, None]) == "▁▅█·"


def test_each_face_is_shown_with_its_box_and_emotion() -> None:
    response = fusion_pb2.AnalyzeResponse()
    response.modalities.add(modality=common_pb2.MODALITY_VISION, status=common_pb2.MODALITY_STATUS_OK)
    response.image.image_width, response.image.image_height = 1024, 512
    response.image.faces.add(box=vision_pb2.BoundingBox(x=749, y=64, width=101, height=101), distribution=_dist(HAPPY))
    response.image.faces.add(box=vision_pb2.BoundingBox(x=176, y=64, width=97, height=97), distribution=_dist(SAD, 0.6))
    text = format_response(response)
    assert "2 faces in the 1024x512 image" in text
    assert "face 1  box 101x101 at (749,64)" in text and "happy (90%)" in text
    assert "face 2  box 97x97 at (176,64)" in text and "sad (60%)" in text


def test_each_video_track_shows_its_frames_and_emotion_over_time() -> None:
    video = vision_pb2.AnalyzeVideoResponse(frames_sampled=4, frames_without_faces=1, duration_s=1.5)
    for index, top in enumerate([HAPPY, HAPPY, None, NEUTRAL]):
        frame = video.frames.add(index=index, timestamp_s=0.5 * index)
        if top is not None:
            frame.faces.add(track_id=1, distribution=_dist(top, 1.0))
    video.tracks.add(track_id=1, distribution=_dist(HAPPY, 0.66), frames_seen=3)
    response = fusion_pb2.AnalyzeResponse(video=video)
    response.modalities.add(modality=common_pb2.MODALITY_VISION, status=common_pb2.MODALITY_STATUS_OK)
    lines = format_response(response).splitlines()
    assert any("4 frames sampled over 1.5 s, 1 without a face; 1 face track" in line for line in lines)
    assert any("track 1  happy (66%), in 3 of 4 frames, 0.0-1.5 s" in line for line in lines)
    # One row per emotion on top somewhere: happy in frames 0-1, nobody in frame 2, neutral in frame 3.
    assert any(line.split() == ["happy", "██·▁"] for line in lines), lines
    assert any(line.split() == ["neutral", "▁▁·█"] for line in lines), lines


def test_audio_windows_transcript_and_text_language_are_shown() -> None:
    audio = audio_pb2.AnalyzeAudioResponse(duration_s=3.1, speech_detected=True)
    audio.windows.add(start_s=0.0, end_s=2.0, distribution=_dist(HAPPY, 0.7))
    audio.windows.add(start_s=1.1, end_s=3.1, distribution=_dist(SAD, 0.5))
    audio.transcript.text, audio.transcript.language = " I got the job. ", "en"
    text = text_pb2.AnalyzeTextResponse(language="de", tokens=9, translated=True, translated_text="Thank you")
    text.model.name = "text_minilm_emotion"
    response = fusion_pb2.AnalyzeResponse(audio=audio, text=text)
    response.modalities.add(modality=common_pb2.MODALITY_AUDIO, status=common_pb2.MODALITY_STATUS_OK)
    response.modalities.add(modality=common_pb2.MODALITY_TEXT, status=common_pb2.MODALITY_STATUS_OK)
    out = format_response(response)
    assert "3.1 s, speech; 2 windows" in out
    assert "0.0-2.0 s" in out and "happy (70%)" in out and "1.1-3.1 s" in out and "sad (50%)" in out
    assert "transcript (en): 'I got the job.'" in out
    assert "language de, 9 tokens, model text_minilm_emotion" in out and "translated: 'Thank you'" in out
    # With the recogniser's language probability and confidence, when it reports them.
    audio.transcript.language_probability = 0.95
    audio.transcript.avg_logprob, audio.transcript.no_speech_prob = -0.35, 0.02
    audio.transcript.segments.add(start_s=0.0, end_s=3.1, text="I got the job.")
    response.audio.CopyFrom(audio)
    out = format_response(response)
    assert "transcript (en 95%, mean log-prob -0.35, no speech 2%): 'I got the job.'" in out
    # The text's valence and arousal when its model gives them; a silent window says so.
    response.text.dimensions.valence, response.text.dimensions.arousal = 0.62, -0.1
    response.audio.windows.add(start_s=3.0, end_s=3.1, speech_detected=False)
    out = format_response(response)
    assert "model text_minilm_emotion, valence +0.62, arousal -0.10" in out
    assert any(line.split() == ["3.0-3.1", "s", "no", "speech"] for line in out.splitlines()), out


def test_json_is_protobufs_mapping_with_every_field() -> None:
    response = fusion_pb2.AnalyzeResponse(latency_ms=3.5)
    response.image.faces.add(box=vision_pb2.BoundingBox(x=1, y=2, width=3, height=4), distribution=_dist(HAPPY))
    data = json.loads(response_json(response))
    assert data["latencyMs"] == 3.5 and data["textFromTranscript"] is False
    assert data["image"]["faces"][0]["box"] == {"x": 1, "y": 2, "width": 3, "height": 4}
    assert data["image"]["faces"][0]["distribution"]["top"] == "EMOTION_HAPPY"
