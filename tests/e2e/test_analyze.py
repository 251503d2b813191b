"""FusionService.Analyze through the real embedded stack (tritonserver + the modality services +
fusion, each its own process): an image, synthesized speech and text; a modality service frozen so
the call's deadline is shorter than its latency; a modality service killed mid-test; Triton killed
at the end (then nothing can be analysed: UNAVAILABLE, not OK). (A deployment
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
from emomesh.stack import Stack
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


@pytest.mark.parametrize(("frozen", "answering"), [("vision", "text"), ("text", "vision")])
def test_deadline_shorter_than_a_frozen_modality_gives_partial_results_in_time(
    stack: Stack, fusion: fusion_pb2_grpc.FusionServiceStub, astronaut_jpeg: bytes, frozen: str, answering: str
) -> None:
    # SIGSTOP freezes the process: its socket still accepts, but it answers nothing, so its latency
    # is longer than any deadline. Concurrent Analyze calls must all still succeed, in time, with a
    # partial result (fusion keeps a margin of the deadline to answer; the process is thawed after).
    process = stack.processes[frozen]
    request = fusion_pb2.AnalyzeRequest(image=astronaut_jpeg, text=TEXT)
    os.kill(process.pid, signal.SIGSTOP)
    try:
        calls = [fusion.Analyze.future(request, timeout=3) for _ in range(4)]
        responses = [call.result() for call in calls]
    finally:
        os.kill(process.pid, signal.SIGCONT)
    for response in responses:
        results = by_name(response)
        assert results[frozen].status == common_pb2.MODALITY_STATUS_TIMED_OUT, results[frozen].detail
        assert results[answering].status == common_pb2.MODALITY_STATUS_OK, results[answering].detail
        assert [w.modality for w in response.fused.weights] == [MODALITIES[answering]]
        assert MODALITIES[frozen] in response.fused.missing
    # Thawed, it answers again through the same fusion channel.
    again = fusion.Analyze(request, timeout=60)
    assert by_name(again)[frozen].status == common_pb2.MODALITY_STATUS_OK


def test_bad_input_to_one_modality_is_reported_not_fatal(
    fusion: fusion_pb2_grpc.FusionServiceStub,
) -> None:
    response = fusion.Analyze(fusion_pb2.AnalyzeRequest(image=b"not an image", text=TEXT), timeout=60)
    assert by_name(response)["vision"].status == common_pb2.MODALITY_STATUS_INVALID_INPUT


def test_nothing_usable_in_the_input_is_invalid_argument_not_ok(fusion: fusion_pb2_grpc.FusionServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        fusion.Analyze(fusion_pb2.AnalyzeRequest(image=b"not an image"), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nothing in the request could be analysed (vision service: image could not be read" in (
        err.value.details() or ""
    )


def test_an_image_over_the_message_limit_is_refused_unread(fusion: fusion_pb2_grpc.FusionServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        fusion.Analyze(fusion_pb2.AnalyzeRequest(image=b"\0" * 30_000_000), timeout=60)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (err.value.details() or "")


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


def test_fuse_rpc_refuses_a_distribution_that_does_not_sum_to_one(fusion: fusion_pb2_grpc.FusionServiceStub) -> None:
    percentages = common_pb2.EmotionDistribution(probabilities=[5.0] * 7)
    result = common_pb2.ModalityResult(modality=common_pb2.MODALITY_TEXT, distribution=percentages)
    with pytest.raises(grpc.RpcError) as err:
        fusion.Fuse(fusion_pb2.FuseRequest(results=[result]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (
        "results[0] (text): distribution probabilities must sum to 1 (within 0.001), they sum to 35"
    )


def test_dead_triton_makes_analyze_unavailable_not_ok(
    stack: Stack, fusion: fusion_pb2_grpc.FusionServiceStub, astronaut_jpeg: bytes, speech_wav: bytes
) -> None:
    # Runs last in this module: Triton does not come back. Every modality that is still up needs
    # Triton, so nothing can be fused, and the call must say so instead of answering OK.
    triton = stack.triton.process
    assert triton is not None
    os.killpg(triton.pid, signal.SIGKILL)
    triton.wait()
    request = fusion_pb2.AnalyzeRequest(image=astronaut_jpeg, audio=speech_wav, text=TEXT)
    with pytest.raises(grpc.RpcError) as err:
        fusion.Analyze(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    details = err.value.details() or ""
    assert details.startswith("no modality could be analysed (")
    # What failed is named, where it runs is not: no peer address, port or IP reaches the caller.
    assert "text service: UNAVAILABLE: model text_minilm_emotion is unavailable" in details
    for internal in ("ipv4:", "ipv6:", "127.0.0.1", f":{stack.config.triton_ports.grpc}"):
        assert internal not in details
