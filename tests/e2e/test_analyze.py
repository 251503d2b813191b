"""FusionService.Analyze through the real embedded stack (tritonserver + the modality services +
fusion, each its own process): an image, synthesized speech and text; a modality service frozen so
the call's deadline is shorter than its latency; a modality service killed mid-test. (A deployment
without a modality service is covered by tests/unit/fusion/test_orchestrator.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import grpc
import pytest

from emomesh.procs import stop_process
from emomesh.server import grpc_options
from emomesh.stack import Stack, StackConfig
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from tests.tools import require_tool

pytestmark = pytest.mark.e2e

MODALITIES = {
    "vision": common_pb2.MODALITY_VISION,
    "audio": common_pb2.MODALITY_AUDIO,
    "text": common_pb2.MODALITY_TEXT,
}
SPOKEN = "I am so happy to see you again, this is wonderful news."
TEXT = "Thank you so much, I love it!"
ANSWERED = (common_pb2.MODALITY_STATUS_OK, common_pb2.MODALITY_STATUS_LOW_CONFIDENCE)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    wanted = ("vision", "audio", "text", "fusion")
    with Stack(StackConfig.ephemeral(tmp_path_factory.mktemp("stack"), services=wanted)) as running:
        yield running


@pytest.fixture(scope="module")
def fusion(stack: Stack) -> Iterator[fusion_pb2_grpc.FusionServiceStub]:
    with grpc.insecure_channel(stack.config.address("fusion"), options=grpc_options(64 * 1024 * 1024)) as channel:
        yield fusion_pb2_grpc.FusionServiceStub(channel)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    espeak_ng = require_tool("espeak-ng", "scripts/setup.sh installs it")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run([espeak_ng, "-s", "150", "-w", str(path), SPOKEN], check=True, capture_output=True)
    return path.read_bytes()


def by_name(response: fusion_pb2.AnalyzeResponse) -> dict[str, common_pb2.ModalityResult]:
    names = {number: name for name, number in MODALITIES.items()}
    return {names[r.modality]: r for r in response.modalities}


def test_image_speech_and_text_are_analysed_and_fused(
    fusion: fusion_pb2_grpc.FusionServiceStub, astronaut_jpeg: bytes, speech_wav: bytes
) -> None:
    response = fusion.Analyze(fusion_pb2.AnalyzeRequest(image=astronaut_jpeg, audio=speech_wav, text=TEXT), timeout=60)
    results = by_name(response)
    assert list(results) == ["vision", "audio", "text"]
    for name, result in results.items():
        assert result.status in ANSWERED, (name, result.detail)
        assert result.latency_ms > 0
    # The astronaut smiles: vision finds one face and calls it happy.
    assert results["vision"].status == common_pb2.MODALITY_STATUS_OK
    assert response.image.image_width == 512 and len(response.image.faces) == 1
    assert results["vision"].distribution.top == common_pb2.EMOTION_HAPPY
    fused = response.fused
    assert fused.HasField("distribution")
    used = {w.modality for w in fused.weights}
    assert used == {r.modality for r in response.modalities if r.status == common_pb2.MODALITY_STATUS_OK}
    assert sum(w.weight for w in fused.weights) == pytest.approx(1.0, abs=1e-5)
    assert fused.polarity != common_pb2.POLARITY_UNSPECIFIED
    assert not response.text_from_transcript
    assert response.latency_ms > 0


@pytest.mark.parametrize("name", ["audio", "text"])
def test_each_modality_service_answers(fusion: fusion_pb2_grpc.FusionServiceStub, speech_wav: bytes, name: str) -> None:
    request = fusion_pb2.AnalyzeRequest(audio=speech_wav, transcript_as_text=False) if name == "audio" else None
    request = request or fusion_pb2.AnalyzeRequest(text=TEXT)
    result = by_name(fusion.Analyze(request, timeout=60))[name]
    assert result.status == common_pb2.MODALITY_STATUS_OK, result.detail
    assert len(result.distribution.probabilities) == 7


def test_speech_transcript_goes_to_the_text_service(
    fusion: fusion_pb2_grpc.FusionServiceStub, speech_wav: bytes
) -> None:
    response = fusion.Analyze(fusion_pb2.AnalyzeRequest(audio=speech_wav), timeout=60)
    assert response.audio.transcript.text.strip(), "ASR returned no transcript for clear synthetic speech"
    assert response.text_from_transcript
    assert by_name(response)["text"].status in ANSWERED


def test_deadline_shorter_than_a_modality_marks_it_timed_out(
    stack: Stack, fusion: fusion_pb2_grpc.FusionServiceStub, astronaut_jpeg: bytes
) -> None:
    # SIGSTOP freezes the vision process: its socket still accepts, but it answers nothing, so its
    # latency is longer than any deadline. The Analyze call itself must still succeed in time.
    vision = stack.processes["vision"]
    os.kill(vision.pid, signal.SIGSTOP)
    try:
        response = fusion.Analyze(fusion_pb2.AnalyzeRequest(image=astronaut_jpeg, text=TEXT), timeout=3)
    finally:
        os.kill(vision.pid, signal.SIGCONT)
    results = by_name(response)
    assert results["vision"].status == common_pb2.MODALITY_STATUS_TIMED_OUT, results["vision"].detail
    assert common_pb2.MODALITY_VISION in response.fused.missing
    assert results["text"].status == common_pb2.MODALITY_STATUS_OK
    assert [w.modality for w in response.fused.weights] == [common_pb2.MODALITY_TEXT]
    # Thawed, vision answers again through the same fusion channel.
    again = fusion.Analyze(fusion_pb2.AnalyzeRequest(image=astronaut_jpeg), timeout=60)
    assert by_name(again)["vision"].status == common_pb2.MODALITY_STATUS_OK


def test_bad_input_to_one_modality_is_reported_not_fatal(
    fusion: fusion_pb2_grpc.FusionServiceStub,
) -> None:
    response = fusion.Analyze(fusion_pb2.AnalyzeRequest(image=b"not an image", text=TEXT), timeout=60)
    assert by_name(response)["vision"].status == common_pb2.MODALITY_STATUS_INVALID_INPUT


def test_nothing_to_analyse_is_invalid_argument(fusion: fusion_pb2_grpc.FusionServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        fusion.Analyze(fusion_pb2.AnalyzeRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nothing to analyse" in (err.value.details() or "")


def test_killed_modality_service_gives_a_partial_result(
    stack: Stack, fusion: fusion_pb2_grpc.FusionServiceStub, astronaut_jpeg: bytes, speech_wav: bytes
) -> None:
    # Runs last in this module: the vision process does not come back.
    stop_process(stack.processes["vision"])
    response = fusion.Analyze(fusion_pb2.AnalyzeRequest(image=astronaut_jpeg, audio=speech_wav, text=TEXT), timeout=30)
    results = by_name(response)
    assert results["vision"].status == common_pb2.MODALITY_STATUS_UNAVAILABLE
    assert "vision service" in results["vision"].detail
    assert common_pb2.MODALITY_VISION in response.fused.missing
    for name in ("audio", "text"):
        assert results[name].status in ANSWERED, results[name].detail
    assert not response.HasField("image")


def test_fuse_rpc_on_the_real_service(fusion: fusion_pb2_grpc.FusionServiceStub) -> None:
    happy = common_pb2.EmotionDistribution(probabilities=[0.02, 0.02, 0.02, 0.88, 0.02, 0.02, 0.02])
    angry = common_pb2.EmotionDistribution(probabilities=[0.88, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02])
    results = [
        common_pb2.ModalityResult(modality=common_pb2.MODALITY_VISION, distribution=happy),
        common_pb2.ModalityResult(modality=common_pb2.MODALITY_TEXT, distribution=angry),
    ]
    response = fusion.Fuse(fusion_pb2.FuseRequest(results=results), timeout=10)
    assert response.fused.conflict
    assert sorted(response.fused.conflicting) == [common_pb2.MODALITY_VISION, common_pb2.MODALITY_TEXT]
    assert common_pb2.MODALITY_AUDIO in response.fused.missing
