"""`emomesh eval` argument handling without a stack: adapters list, summaries, errors, progress bar."""

import io
from pathlib import Path

import pytest

from emomesh import cli
from emomesh.evaluation.cli import ProgressBar
from emomesh.evaluation.metrics import classification_metrics
from emomesh.evaluation.report import write_report


def test_list_adapters(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", "--list-adapters"]) == 0
    out = capsys.readouterr().out
    for name in ("image-folder", "audio-folder", "goemotions", "meld", "text-csv", "valence-arousal", "mosi"):
        assert name in out


def test_summarize_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = classification_metrics(["happy", "sad"], ["happy", "happy"])
    write_report(tmp_path / "runs" / "toy", "toy", metrics, {"dataset": "toy", "model": "m:1"})
    out_file = tmp_path / "summary.md"
    assert cli.main(["eval", "--summarize", str(tmp_path / "runs"), "--summary-out", str(out_file)]) == 0
    assert "| toy | - | 2 | 0 | 0 | 0.5000 |" in out_file.read_text()
    assert out_file.read_text() == capsys.readouterr().out


def test_errors_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval"]) == 2
    assert "a dataset path is needed" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "missing.csv")]) == 2
    assert "pass --adapter" in capsys.readouterr().err
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "labels.csv").write_text("path,label\na.png,happy\n")
    assert cli.main(["eval", str(tmp_path / "ds"), "--split", "val", "--out", str(tmp_path / "o")]) == 2
    assert "no split column" in capsys.readouterr().err
    (tmp_path / "texts.csv").write_text("text,label\nhello,happy\n")
    assert cli.main(["eval", str(tmp_path / "texts.csv"), "--split", "train", "--out", str(tmp_path / "o")]) == 2
    assert "texts.csv has no split column" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "texts.csv"), "--mode", "speech-transcript"]) == 2
    assert "--mode speech-transcript needs a speech dataset, this one is text" in capsys.readouterr().err


def test_progress_bar_prints_every_tenth_when_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar("fer", stream)
    for done in range(1, 101):
        bar(done, 100)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("fer [") and "100/100" in lines[-1]
