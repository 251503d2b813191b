"""The demo's Mandarin step: it prints what came back and fails only when nothing was transcribed."""

from __future__ import annotations

from pathlib import Path

import pytest

from emomesh import cli, demo
from emomesh.stack import StackConfig
from emotion.common.v1 import common_pb2
from emotion.fusion.v1 import fusion_pb2


def _analysis(text: str, language: str) -> fusion_pb2.AnalyzeResponse:
    response = fusion_pb2.AnalyzeResponse()
    response.audio.transcript.text, response.audio.transcript.language = text, language
    response.modalities.add(modality=common_pb2.MODALITY_AUDIO, status=common_pb2.MODALITY_STATUS_OK)
    return response


def test_a_transcript_in_another_language_is_shown_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "analyze", lambda address, request: _analysis("woman minty and e-t-tube", "en"))
    response = demo.analyze_mandarin(StackConfig.ephemeral(tmp_path), demo.SAMPLE_SPEECH_ZH)
    assert response.audio.transcript.language == "en"
    out = capsys.readouterr().out
    assert "== FusionService.Analyze: speech_zh.wav" in out
    assert "transcript (en): 'woman minty and e-t-tube'" in out and "heard 'en', not 'zh'" in out


def test_no_transcript_at_all_fails_the_demo_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "analyze", lambda address, request: _analysis("", ""))

    def run_demo(state_dir: Path) -> str:
        demo.analyze_mandarin(StackConfig.ephemeral(state_dir), demo.SAMPLE_SPEECH_ZH)
        return ""

    monkeypatch.setattr(demo, "run_demo", run_demo)
    assert cli.main(["demo", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("emomesh demo: DemoFailed: the Mandarin clip") and "without a transcript (audio ok)" in err
    assert err.count("\n") == 1
