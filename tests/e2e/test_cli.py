"""The stack as a user starts it: the `emomesh` command in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def test_up_serves_until_ctrl_c_then_stops_everything(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*EMOMESH, "up", "--ephemeral-ports", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    output = "".join(lines)
    assert "vision   grpc 127.0.0.1:" in output, output
    children = _children(process.pid)
    assert any("tritonserver" in c for c in children.values()), children
    assert any("services.vision.server" in c for c in children.values()), children
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    assert process.returncode == 0, rest
    assert "stopped." in rest
    still_running = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert still_running == [], {pid: children[pid] for pid in still_running}
