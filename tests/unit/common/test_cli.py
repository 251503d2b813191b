"""The `emomesh` entry point itself: --version, the exit statuses in --help, one-line errors on
stderr (the traceback only with --debug, before or after the command)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from emomesh import analyze_cli, cli
from emomesh.startup import STARTUP_ERRORS
from emotion.fusion.v1 import fusion_pb2


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"emomesh {metadata.version('emomesh')}"


def test_help_lists_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    codes = [error.exit_code for error in STARTUP_ERRORS]
    assert len(set(codes)) == len(codes) and not {0, 1, 2, 130} & set(codes)
    for error in STARTUP_ERRORS:
        assert f"  {error.exit_code:<4} up: {error.summary}" in out
    assert "--debug" in out and "EMOMESH_CLIENT_<SERVICE>_ADDR" in out


def test_bad_addresses_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["health", "--address", "127.0.0.1:1"]) == 2
    assert "expected SERVICE=HOST:PORT" in capsys.readouterr().err
    assert cli.main(["analyze", "--text", "hi", "--stack", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emomesh analyze: no stack is running with the state directory") and err.count("\n") == 1


def test_unexpected_errors_are_one_line_unless_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> fusion_pb2.AnalyzeResponse:
        raise RuntimeError("boom")

    monkeypatch.setattr(analyze_cli, "analyze", broken)
    assert cli.main(["analyze", "--text", "hi", "--fusion", "127.0.0.1:1"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "emomesh analyze: RuntimeError: boom (--debug shows the traceback)\n"
    assert captured.out == ""
    for argv in (["--debug", "analyze", "--text", "hi"], ["analyze", "--text", "hi", "--debug"]):
        with pytest.raises(RuntimeError, match="boom"):
            cli.main(argv)
