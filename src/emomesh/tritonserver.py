"""Runs the real tritonserver binary that the nvidia-pytriton wheel bundles, on a CPU machine.

The bare binary needs a backend directory of its own, the wheel's libraries on LD_LIBRARY_PATH
(without them the Python stub cannot load libcudart and the server hangs at "loading"), this
Python's libpython first, and the virtualenv's bin on PATH so that the stub sees its packages.
See docs/triton.md."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emomesh.ports import TRITON_GRPC_PORT, TRITON_HTTP_PORT, TRITON_METRICS_PORT
from emomesh.procs import kill_process_group

log = logging.getLogger(__name__)


class TritonNotInstalled(RuntimeError):
    pass


@dataclass(frozen=True)
class TritonPorts:
    http: int = TRITON_HTTP_PORT
    grpc: int = TRITON_GRPC_PORT
    metrics: int = TRITON_METRICS_PORT


def _pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as exc:
        raise TritonNotInstalled("nvidia-pytriton is not installed: pip install 'emomesh[embedded]'") from exc
    return Path(pytriton.__file__).resolve().parent


def python_backend_stub() -> Path:
    """The wheel's Python-backend stub for this Python; TritonNotInstalled when it has none."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = _pytriton_root() / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonNotInstalled(f"nvidia-pytriton has no Python backend stub for Python {version}")
    return stub


def prepare_backend_dir(state_dir: Path) -> Path:
    """Builds <state_dir>/backends/python from the wheel's Python backend and this Python's stub."""
    root = _pytriton_root() / "tritonserver"
    stub = python_backend_stub()
    backend = state_dir / "backends" / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for source in (
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        target = backend / source.name
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(source)
    return state_dir / "backends"


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    libs = _pytriton_root().parent / "nvidia_pytriton.libs"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # Each Python-backend instance runs onnxruntime with its own thread settings; keep BLAS quiet.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def tritonserver_binary() -> Path:
    return _pytriton_root() / "tritonserver" / "bin" / "tritonserver"


def command(model_repository: Path, backend_dir: Path, ports: TritonPorts, host: str = "127.0.0.1") -> list[str]:
    return [
        str(tritonserver_binary()),
        f"--model-repository={model_repository}",
        f"--backend-directory={backend_dir}",
        f"--http-address={host}",
        f"--http-port={ports.http}",
        f"--grpc-address={host}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={host}",
        f"--metrics-port={ports.metrics}",
        "--pinned-memory-pool-byte-size=0",
        "--allow-gpu-metrics=false",
        "--exit-on-error=true",
        "--strict-readiness=true",
        "--log-verbose=0",
    ]


SHM_PATTERN = "/dev/shm/triton_python_backend_shm_region_*"


def _mapped_shm_regions() -> set[str]:
    """Shared-memory regions some live process still maps (other servers' stubs, ours if alive)."""
    mapped: set[str] = set()
    for maps in glob.glob("/proc/[0-9]*/maps"):
        with contextlib.suppress(OSError), open(maps) as fh:
            mapped.update(line.split()[-1] for line in fh if "triton_python_backend_shm_region_" in line)
    return mapped


def cleanup_shared_memory() -> None:
    """Removes Python-backend shared-memory regions that no process maps any more: a crashed stub
    leaves its regions behind, while those of other running servers stay mapped and are kept."""
    in_use = _mapped_shm_regions()
    for path in glob.glob(SHM_PATTERN):
        if path not in in_use:
            with contextlib.suppress(OSError):
                os.unlink(path)


class TritonServer:
    """A tritonserver child process with its ports and log file."""

    def __init__(
        self,
        model_repository: Path,
        state_dir: Path,
        ports: TritonPorts,
        log_path: Path,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_repository = model_repository
        self.state_dir = state_dir
        self.ports = ports
        self.log_path = log_path
        # More tritonserver options (gRPC TLS, explicit model loading...), after the defaults.
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        # Where the log of the latest start begins (the file is appended to across starts).
        self.log_offset = 0

    @property
    def name(self) -> str:
        return "tritonserver"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    def start(self) -> None:
        backend_dir = prepare_backend_dir(self.state_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        self.log_offset = log_file.tell()
        self.process = subprocess.Popen(
            [*command(self.model_repository, backend_dir, self.ports), *self.extra_args],
            env=server_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches the launcher, which stops us in order
        )
        log_file.close()

    def is_ready(self) -> bool:
        url = f"http://127.0.0.1:{self.ports.http}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}; see {self.log_path}")
            if self.is_ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f}s; see {self.log_path}")

    def clean_up_after_exit(self) -> None:
        """After the server exited (a crash, kill -9): ends its Python-backend stubs and frees their
        shared memory. A stub checks that its parent is alive and exits when it is not, but an
        unreaped (zombie) server still counts as alive, and the stubs ignore SIGTERM: they would
        keep their models' memory (~330 MB for the four local models) for ever. So the whole
        process group gets SIGKILL after a short grace."""
        if self.process is not None:
            kill_process_group(self.process.pid, grace_s=1.0)
        cleanup_shared_memory()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (the server unloads its models and stops their stubs), SIGKILL to the whole
        process group if it does not exit in time, then the same clean-up as after a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not stop in time; killing it")
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.clean_up_after_exit()
