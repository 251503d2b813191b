"""The stack as a user starts it: the `emomesh` command in a subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

pytestmark = pytest.mark.e2e

EMOMESH = [sys.executable, "-m", "emomesh.cli"]


def test_demo_starts_the_stack_analyses_the_sample_and_stops(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOMESH_")}
    result = subprocess.run(
        [*EMOMESH, "demo", "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Emomesh stack up in" in out
    for service in ("vision", "audio", "text", "fusion", "dialog", "triton", "redis"):
        assert f"  {service} " in out, service
    # The smiling face and the happy sentence agree; the fused result follows them.
    assert "fused: happy" in out and "polarity positive" in out
    assert "vision ok" in out and "text   ok" in out
    assert "text came from the audio transcript: 'I just got the job" in out
    # Without an LLM endpoint the reply is still there, marked as the offline fallback.
    assert "reply [offline fallback" in out
    assert "stack stopped." in out


def _children(pid: int) -> dict[int, str]:
    """Command lines of the processes whose parent is pid (services, tritonserver, redis), by pid."""
    alive = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    alive[int(entry.name)] = (entry / "cmdline").read_text().replace("\0", " ")
            except (OSError, IndexError):
                continue
    return alive


def _read_until(stdout: IO[str], marks: set[str], limit_s: float) -> str:
    """Lines of `emomesh up`'s output until each of marks has appeared (or the limit, or EOF)."""
    lines: list[str] = []
    deadline = time.monotonic() + limit_s
    while marks and time.monotonic() < deadline:
        line = stdout.readline()
        if not line:
            break
        lines.append(line)
        marks = {mark for mark in marks if mark not in line}
    return "".join(lines)


@pytest.mark.chaos
def test_up_serves_restarts_what_dies_until_ctrl_c_then_stops_everything(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*EMOMESH, "up", "--ephemeral-ports", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    output = _read_until(process.stdout, {"Ctrl-C stops everything"}, 240)
    assert "vision   grpc 127.0.0.1:" in output, output
    addresses = dict(re.findall(r"^  (\w+) +grpc (127\.0\.0\.1:\d+) +metrics", output, re.MULTILINE))
    assert set(addresses) == {"vision", "audio", "text", "fusion", "dialog"}, output
    children = _children(process.pid)
    assert any("tritonserver" in c for c in children.values()), children
    assert any("services.vision.server" in c for c in children.values()), children

    # What the issue found left dead (as zombies): redis-server and the audio service, killed.
    killed = [pid for pid, c in children.items() if "redis-server" in c or "services.audio.server" in c]
    assert len(killed) == 2, children
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    output = _read_until(process.stdout, {"redis-server restarted", "audio restarted", "audio is ready again"}, 180)
    assert "redis-server (pid" in output and "exited with signal SIGKILL" in output, output
    assert "audio is ready again" in output, output
    health = [*EMOMESH, "health", *(f"--address={name}={address}" for name, address in addresses.items())]
    result = subprocess.run(health, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    restarted = _children(process.pid)
    assert not set(killed) & set(restarted), "a killed child was not reaped"
    assert any("redis-server" in c for c in restarted.values()), restarted

    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    assert process.returncode == 0, rest
    assert "stopped." in rest
    everything = {**children, **restarted}
    still_running = [pid for pid in everything if Path(f"/proc/{pid}").exists()]
    assert still_running == [], {pid: everything[pid] for pid in still_running}
