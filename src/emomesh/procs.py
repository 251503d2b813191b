"""Small helpers for child processes and ports, shared by the stack launcher, tests and benches."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emomesh.security import ClientSecurity, ClientTls, open_channel

# Where free_port looks first: below Linux's default range of ephemeral ports (32768-60999), from which the
# kernel also picks the local port of every outgoing connection. A port taken from that range can be
# claimed by a client connection (a browser driver's, a gRPC channel's) between the moment it is found free
# and the moment the service binds it: a CI run lost a whole stack's start to that once.
FREE_PORT_RANGE = (20000, 32767)
_free_ports = random.Random()


def _bindable(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port on loopback that nothing listens on, preferably outside the kernel's ephemeral range (see
    FREE_PORT_RANGE); the kernel's own pick when none of a few tries is free."""
    for _ in range(50):
        port = _free_ports.randint(*FREE_PORT_RANGE)
        if _bindable(port):
            return port
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def grpc_healthy(address: str, service: str = "", timeout_s: float = 1.0, tls: ClientTls | None = None) -> bool:
    """True when the server's grpc.health.v1 says SERVING (health needs no token, TLS if the port has it)."""
    with open_channel(address, ClientSecurity(tls)) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def local_http() -> urllib.request.OpenerDirector:
    """An HTTP client for the stack's own ports: no proxy, since they are on this machine whatever
    HTTP(S)_PROXY says."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_healthy(url: str, timeout_s: float = 1.0) -> bool:
    """True when GET url answers 200 (the gateway's /healthz)."""
    try:
        with local_http().open(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False


def wait_until(
    predicate: object,
    timeout_s: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Polls predicate() until true; fails early if process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}" + (f"; see {log_path}" if log_path else ""))
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s" + (f"; see {log_path}" if log_path else ""))


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_group_members(pgid: int) -> list[int]:
    """Pids of the live processes (zombies left out: they hold no memory and their parent reaps
    them) whose process group is pgid, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # /proc/<pid>/stat: "pid (comm) state ppid pgrp ..."; comm may contain spaces and ")".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _wait_group_empty(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while process_group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def kill_process_group(pgid: int, grace_s: float = 5.0) -> None:
    """Ends every process left in the group pgid: SIGTERM, then SIGKILL to whatever is still there
    after grace_s (Triton's Python-backend stubs ignore SIGTERM). Returns once the group is empty.

    Every child of the stack is started with start_new_session=True, so its pid is its group id and
    whatever it forked (Triton's stubs, a Redis BGSAVE child) is in that group even after the
    leader is gone. The kernel does not reuse a pid while a group of that id has members, so the
    signal cannot reach an unrelated process."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not process_group_members(pgid):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        if _wait_group_empty(pgid, wait_s):
            return
    raise RuntimeError(f"processes {process_group_members(pgid)} of group {pgid} survived SIGKILL")


def describe_exit(returncode: int) -> str:
    """'exit code 3' or 'signal SIGKILL' (Popen reports death by a signal as -signum)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float = 15.0, group_grace_s: float = 2.0) -> None:
    """SIGTERM (graceful shutdown), then SIGKILL of the whole process group if it lingers; reaps
    the process and ends what it left behind in its group (a child started with
    start_new_session=True leads a group of its own)."""
    if process is None:
        return
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    kill_process_group(process.pid, group_grace_s)


class RedisServer:
    """A real redis-server child process on loopback, persisting into its own directory."""

    def __init__(self, port: int, data_dir: Path, log_path: Path) -> None:
        self.port, self.data_dir, self.log_path = port, data_dir, log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def binary() -> str:
        path = shutil.which("redis-server")
        if path is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        return path

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                self.binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                # Append-only file, written before each reply and fsynced every second: a crash of
                # redis-server loses nothing it acknowledged (the data is in the page cache), a crash
                # of the machine about the last second. See docs/operations.md, "Redis durability".
                "--save",
                "60 1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--protected-mode",
                "yes",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        wait_until(self.ping, 20, "redis-server", self.process, self.log_path)

    @property
    def name(self) -> str:
        return "redis-server"

    def is_ready(self) -> bool:
        return self.ping()

    def clean_up_after_exit(self) -> None:
        """Ends what the exited server left in its group (a BGSAVE child)."""
        if self.process is not None:
            kill_process_group(self.process.pid, grace_s=1.0)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.process)
