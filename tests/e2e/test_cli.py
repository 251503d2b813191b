"""The stack as a user starts it: the `emomesh` command in a subprocess (or its entry point,
emomesh.cli.main, in this process where a test must change something inside it): the demo, `emomesh
up` with its supervision, what analyze/health/models print for people and for scripts (--json) against
one stack found through --stack, flags or variables, and the one-line start-up errors."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import cv2
import numpy as np
import pytest

from emomesh import cli
from emomesh import stack as stack_module
from emomesh.procs import free_port
from emomesh.stack import ENDPOINTS_FILE, Stack
from emomesh.startup import StateLock
from emomesh.triton_repo import RenderOptions, render_repository
from tests.audio_media import espeak
from tests.video_media import face_video

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
    for service in ("vision", "audio", "text", "fusion", "dialog", "gateway", "triton", "redis"):
        assert f"  {service} " in out, service
    # The smiling face and the happy sentence agree; the fused result follows them.
    assert "fused: happy" in out and "polarity positive" in out
    assert "vision ok" in out and "text   ok" in out
    # The transcript is shown as Python's repr: in double quotes when it has an apostrophe ("I'm").
    assert re.search(r"text came from the audio transcript: [\"']I just got the job", out), out
    # Without an LLM endpoint the reply is still there, marked as the offline fallback.
    assert "reply [offline fallback" in out
    # The Mandarin clip: Whisper base (the default) transcribes it as Mandarin and its transcript is read
    # as Chinese text; which model reads it and what it answers is printed, not asserted.
    assert "== FusionService.Analyze: speech_zh.wav" in out
    assert re.search(r"transcript \(zh \d+%.*\): '.+'", out), out
    assert "== TextService.AnalyzeText: Chinese text" in out
    assert out.count("language zh") >= 3, out  # the transcript's text and the two sentences
    # The live session: the face is followed frame after frame, the voice window by window.
    assert "== FusionService.AnalyzeStream" in out
    assert re.search(r"faces     frame 0: #1 happy", out), out
    assert re.search(r"speech      0\.0-  3\.0 s", out), out
    assert "face lane: frame sent -> faces received p50" in out
    # The web console: the gateway served the page and saw its services ready; the hint says how to open it.
    assert "== Web console (gateway): http://127.0.0.1:" in out
    assert re.search(r"the page: \d+ bytes; ready: yes \(fusion SERVING, dialog SERVING, vision SERVING\)", out), out
    assert "`.venv/bin/emomesh up`, then open http://127.0.0.1:8080/" in out
    assert "Console: open" not in out  # the demo's own stack stops: it does not invite anyone to open it
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
    # What it printed is in endpoints.json too, for `--stack`; with the launcher's pid.
    endpoints = json.loads((tmp_path / ENDPOINTS_FILE).read_text())
    grpc_services = {name: e["grpc"] for name, e in endpoints["services"].items() if "grpc" in e}
    assert grpc_services == addresses
    # and the console's gateway, whose URL `up` prints
    console = endpoints["services"]["gateway"]["http"]
    assert f"Console: open {console}/ in a browser" in output, output
    assert endpoints["pid"] == process.pid and endpoints["redis"].startswith("redis://127.0.0.1:")
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
    assert not (tmp_path / ENDPOINTS_FILE).exists(), "a clean stop removes endpoints.json"
    everything = {**children, **restarted}
    still_running = [pid for pid in everything if Path(f"/proc/{pid}").exists()]
    assert still_running == [], {pid: everything[pid] for pid in still_running}


# --- analyze, health and models against one stack -------------------------------------------------

SPOKEN = "I am so happy to see you again, this is wonderful news."
SPARKLINE_ROW = re.compile(r"^ +happy +[▁▂▃▄▅▆▇█·]+$", re.MULTILINE)


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """skimage's astronaut twice, side by side (the second mirrored): two smiling faces, 1024x512."""
    from skimage import data

    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    path = tmp_path_factory.mktemp("media") / "two_faces.jpg"
    assert cv2.imwrite(str(path), np.hstack([astronaut, cv2.flip(astronaut, 1)]))
    return path


def emomesh(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`emomesh ARGS` as a script would run it, without the EMOMESH_* variables of this test run."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("EMOMESH_")}
    return subprocess.run([*EMOMESH, *args], capture_output=True, text=True, timeout=180, env={**base, **(env or {})})


def test_analyze_json_has_every_face_and_nothing_else_on_stdout(stack: Stack, two_faces: Path) -> None:
    result = emomesh("analyze", "--stack", str(stack.config.state_dir), "--image", str(two_faces), "--json")
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)  # what `| jq` would read: the whole of stdout is one document
    assert response["image"]["imageWidth"] == 1024 and response["image"]["imageHeight"] == 512
    faces = response["image"]["faces"]
    assert len(faces) == 2
    assert sorted(face["box"]["x"] < 512 for face in faces) == [False, True]  # one face in each half
    for face in faces:
        assert face["box"]["width"] > 40 and face["distribution"]["top"] == "EMOTION_HAPPY"
        assert 0.5 < face["distribution"]["confidence"] <= 1
    assert response["modalities"][0]["status"] == "MODALITY_STATUS_OK"
    assert response["textFromTranscript"] is False


def test_analyze_shows_each_face_window_and_the_transcript(
    stack: Stack,
    two_faces: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    speech = tmp_path / "speech.wav"
    speech.write_bytes(espeak(SPOKEN))
    # The fusion address from the environment this time.
    monkeypatch.setenv("EMOMESH_CLIENT_FUSION_ADDR", stack.config.address("fusion"))
    assert cli.main(["analyze", "--image", str(two_faces), "--audio", str(speech)]) == 0
    out = capsys.readouterr().out
    assert "2 faces in the 1024x512 image" in out
    assert re.search(r"face 1  box \d+x\d+ at \(\d+,\d+\) +happy \(\d+%\)", out), out
    assert re.search(r"face 2  box \d+x\d+ at \(\d+,\d+\) +happy \(\d+%\)", out), out
    assert re.search(r"\d+\.\d s, speech; \d+ windows?", out), out
    assert re.search(r"^ +0\.0-\d+\.\d s +\w+ \(\d+%\)$", out, re.MULTILINE), out
    # The language with its probability, the recogniser's confidence, the text as Python's repr.
    transcript = r"transcript \(en \d+%, mean log-prob -\d\.\d\d, no speech \d+%\): [\"'].*happy.*[\"']"
    assert re.search(transcript, out, re.IGNORECASE), out
    assert "language en" in out


def test_analyze_shows_each_video_track_over_time(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = tmp_path / "face.mp4"
    video.write_bytes(face_video(12, faceless=(4, 5)))
    assert cli.main(["analyze", "--video", str(video), "--fusion", stack.config.address("fusion")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\d+ frames sampled over \d+\.\d s, [1-9] without a face; 1 face track", out), out
    assert re.search(r"track \d+  happy \(\d+%\), in \d+ of \d+ frames, \d+\.\d-\d+\.\d s", out), out
    row = SPARKLINE_ROW.search(out)
    assert row is not None and "·" in row.group(), out  # the faceless frames are gaps in the track


def test_health_and_models_of_the_stack_as_json(stack: Stack) -> None:
    health = emomesh("health", "--stack", str(stack.config.state_dir), "--json")
    assert health.returncode == 0, health.stdout + health.stderr
    report = json.loads(health.stdout)
    assert report["serving"] is True
    assert [(s["service"], s["address"], s["status"]) for s in report["services"]] == [
        (name, stack.config.address(name), "SERVING") for name in ("vision", "audio", "text", "fusion")
    ]
    models = emomesh("models", "--json", env={"EMOMESH_TRITON_URL": stack.triton.grpc_url})
    assert models.returncode == 0, models.stderr
    listed = {m["name"]: m for m in json.loads(models.stdout)["models"]}
    vision = listed["fer_mini_xception_ft"]
    assert vision["ready"] and vision["version"] == "1" and vision["artifact_version"]
    assert vision["inputs"] == [{"name": "face_gray", "datatype": "FP32", "shape": [-1, 1, 64, 64]}]
    assert all(m["state"] == "READY" for m in listed.values())


def test_models_for_people(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "--stack", str(stack.config.state_dir)]) == 0
    out = capsys.readouterr().out
    assert f"Triton at {stack.triton.grpc_url}: " in out
    assert re.search(r"fer_mini_xception_ft +v1 +READY +max batch \d+", out), out
    assert "in  face_gray FP32 [-1,1,64,64]" in out


def test_unreachable_fusion_says_so_on_stderr_only() -> None:
    result = emomesh("analyze", "--text", "hello", "--json", "--address", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("emomesh analyze: fusion at 127.0.0.1:") and "UNAVAILABLE" in result.stderr
    assert "is the stack up?" in result.stderr


# --- start-up errors: one line that names the cause and the fix, and its own exit status -----------


def test_second_up_on_the_same_state_directory_leaves_the_first_alone(stack: Stack) -> None:
    state = stack.config.state_dir
    endpoints = (state / ENDPOINTS_FILE).read_text()
    logs = {path.name: path.stat().st_size for path in (state / "logs").iterdir()}
    result = emomesh("up", "--ephemeral-ports", "--state-dir", str(state))
    assert result.returncode == 5, result.stderr
    assert result.stderr == (
        f"emomesh up: another `emomesh up` (pid {os.getpid()}) is running with the state directory {state}; "
        "stop it (Ctrl-C in its terminal), or start this one with another --state-dir\n"
    )
    assert (state / ENDPOINTS_FILE).read_text() == endpoints
    assert {path.name: path.stat().st_size for path in (state / "logs").iterdir()} == logs


def test_busy_port_is_named_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        busy = int(other.getsockname()[1])
        ports = iter([busy])
        # The first port an ephemeral stack picks is Triton's HTTP port: make it one that is taken.
        monkeypatch.setattr(stack_module, "free_port", lambda: next(ports, None) or free_port())
        assert cli.main(["up", "--ephemeral-ports", "--state-dir", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"emomesh up: port {busy} (Triton HTTP, held by pid {os.getpid()}: ")
    assert err.rstrip().endswith("start this stack with `emomesh up --ephemeral-ports`") and err.count("\n") == 1
    assert not (tmp_path / "logs").exists()
    lock = StateLock(tmp_path)
    lock.acquire()  # released on the way out
    lock.release()


def test_missing_redis_server_names_the_setup_script(tmp_path: Path) -> None:
    only_python = {"PATH": str(Path(sys.executable).parent)}
    result = emomesh("up", "--ephemeral-ports", "--state-dir", str(tmp_path), env=only_python)
    assert result.returncode == 4
    assert result.stderr == (
        "emomesh up: redis-server is not installed (not found on PATH); run `bash scripts/setup.sh`\n"
    )
    debug = emomesh("--debug", "up", "--ephemeral-ports", "--state-dir", str(tmp_path), env=only_python)
    assert debug.returncode == 4
    assert debug.stderr.startswith("Traceback") and debug.stderr.endswith(result.stderr)


def test_model_that_triton_cannot_load_is_named_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def corrupt_repository(out: Path, options: RenderOptions) -> list[str]:
        names = render_repository(out, options, only=["fer_mini_xception_ft"])
        model = out / "fer_mini_xception_ft" / "1" / "model.onnx"
        model.unlink()
        model.write_bytes(b"not an ONNX model")
        return names

    monkeypatch.setattr(stack_module, "render_repository", corrupt_repository)
    state = tmp_path / "state"
    assert cli.main(["up", "--ephemeral-ports", "--state-dir", str(state)]) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("emomesh up: Triton could not load the model repository")
    assert "model fer_mini_xception_ft: Internal: " in err and "Protobuf parsing failed." in err
    assert f"full log: {state / 'logs' / 'triton.log'}" in err
    assert not (state / ENDPOINTS_FILE).exists()
