"""What can stop the embedded stack from starting, said in one line with its fix and its own exit code.

`emomesh up` (and anything else that starts a `Stack`) checks, before it starts a child or writes a
file into the state directory: that no other stack holds the state directory (an `flock` on
`<state-dir>/stack.lock`, which the kernel releases however the holder ends), that the binaries it
needs are installed, and that every port it is about to listen on is free. Triton that cannot load
a model and a child that dies while starting are reported from their logs. `emomesh.cli` prints the
message of a `StartupError` on stderr and exits with its `exit_code`; `--debug` adds the traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, ClassVar

from emomesh.paths import model_file
from emomesh.tritonserver import TritonNotInstalled, python_backend_stub, tritonserver_binary

SETUP_FIX = "run `bash scripts/setup.sh`"
LOCK_FILE = "stack.lock"


class StartupError(RuntimeError):
    """The stack could not start; the message names the cause and the fix."""

    exit_code: ClassVar[int] = 7
    summary: ClassVar[str] = "a child of the stack failed while starting (its log is named)"


class PortInUse(StartupError):
    exit_code = 3
    summary = "a port the stack needs is in use"


class MissingBinary(StartupError):
    exit_code = 4
    summary = "redis-server, tritonserver (nvidia-pytriton) or another tool is not installed"


class StackLocked(StartupError):
    exit_code = 5
    summary = "another `emomesh up` uses the same state directory"


class ModelLoadFailed(StartupError):
    exit_code = 6
    summary = "Triton could not load a model of the repository"


# The order `emomesh --help` lists them in.
STARTUP_ERRORS: tuple[type[StartupError], ...] = (PortInUse, MissingBinary, StackLocked, ModelLoadFailed, StartupError)


class StateLock:
    """An exclusive `flock` on `<state_dir>/stack.lock`, held while a stack runs. The file keeps the
    holder's pid (for the message of whoever finds it locked); it is never deleted, since deleting a
    lock file lets two processes lock two different files of one name."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")  # not "w": truncating would erase the holder's pid before we know
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise StackLocked(
                f"another `emomesh up` ({who}) is running with the state directory {self.path.parent}; "
                "stop it (Ctrl-C in its terminal), or start this one with another --state-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port. SO_REUSEADDR, as the servers themselves set it, so
    that connections of a stopped stack in TIME_WAIT do not count; without SO_REUSEPORT, so that a
    gRPC server (which sets it) still counts: gRPC would otherwise share the port with it."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on a TCP port, from /proc/net/tcp and tcp6 (state 0A is LISTEN)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def port_holder(port: int) -> str | None:
    """ "pid 123: redis-server" for the process that listens on port, when /proc lets us see it."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
                command = " ".join([Path(argv[0]).name, *argv[1:]]).strip()
                return f"pid {proc.name}: {command if len(command) <= 60 else command[:57] + '...'}"
        except OSError:
            continue  # gone, or another user's
    return None


def check_ports(ports: Mapping[str, int]) -> None:
    """Raises PortInUse naming every busy port (by what it is for: "fusion gRPC", "Triton HTTP"...)
    and, when /proc shows it, the process that holds it."""
    busy = []
    for what, port in ports.items():
        if port and not port_is_free(port):
            holder = port_holder(port)
            busy.append(f"{port} ({what}{', held by ' + holder if holder else ''})")
    if busy:
        ports_text = ("port " if len(busy) == 1 else "ports ") + ", ".join(busy)
        raise PortInUse(
            f"{ports_text} already in use on 127.0.0.1 (another emomesh stack or another program listens "
            "there); stop it, or start this stack with `emomesh up --ephemeral-ports`"
        )


def check_binary(name: str) -> str:
    """The path of an executable on PATH; MissingBinary naming the fix when there is none."""
    path = shutil.which(name)
    if path is None:
        raise MissingBinary(f"{name} is not installed (not found on PATH); {SETUP_FIX}")
    return path


def check_tritonserver() -> None:
    """The tritonserver binary that the nvidia-pytriton wheel bundles, and its Python-backend stub."""
    try:
        binary = tritonserver_binary()
        python_backend_stub()
    except TritonNotInstalled as exc:
        raise MissingBinary(f"tritonserver is not available: {exc}; {SETUP_FIX}") from exc
    if not binary.is_file():
        raise MissingBinary(f"tritonserver is not installed ({binary} is missing from nvidia-pytriton); {SETUP_FIX}")


def check_assembled_models(specs: Mapping[str, Mapping[str, Any]], repository: Path) -> None:
    """Models that are not committed but assembled at setup (`assembled_by` in models.yaml) must be
    there: without one, Triton would start without it and a service would fail on its first call."""
    missing = [
        (name, str(spec["assembled_by"]))
        for name, spec in specs.items()
        if spec.get("assembled_by") and not model_file(name, repository).exists()
    ]
    if missing:
        names = ", ".join(f"{name} (`{command}`)" for name, command in missing)
        raise ModelLoadFailed(
            f"model file missing from {repository}: {names} is assembled at setup, not committed; {SETUP_FIX}"
        )


# The lines of Triton's log that name a model which could not be loaded (the text after the name is
# Triton's error, which may continue over escaped "\n"s: only its first line is kept).
_MODEL_ERRORS = (
    re.compile(r"failed to load '(?P<model>[^']+)' version \d+: (?P<error>.*)"),
    re.compile(r"Poll failed for model directory '(?P<model>[^']+)': (?P<error>.*)"),
)


def model_load_errors(log_text: str) -> dict[str, str]:
    """Model name -> the first line of its error, from a tritonserver log (first error per model)."""
    errors: dict[str, str] = {}
    for line in log_text.splitlines():
        for pattern in _MODEL_ERRORS:
            match = pattern.search(line)
            if match and match["model"] not in errors:
                error = match["error"].split("\\n", 1)[0].rstrip('"').strip()
                errors[match["model"]] = error
    return errors


def last_log_line(log_text: str, limit: int = 300) -> str:
    """The last non-empty line of a log (the likeliest to say why a process exited), shortened."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    return last if len(last) <= limit else last[: limit - 3] + "..."


def read_from(path: Path, offset: int) -> str:
    """What was appended to a log file from offset on ("" when it cannot be read)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
