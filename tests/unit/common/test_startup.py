"""What stops the stack from starting, in one line with the fix (emomesh.startup): the state
directory's lock (released by the kernel when its holder is killed), busy ports, missing binaries,
and the model Triton could not load, read from its log."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emomesh import tritonserver
from emomesh.paths import MODEL_REPOSITORY
from emomesh.procs import free_port
from emomesh.startup import (
    MissingBinary,
    ModelLoadFailed,
    PortInUse,
    StackLocked,
    StateLock,
    check_assembled_models,
    check_binary,
    check_ports,
    check_tritonserver,
    last_log_line,
    model_load_errors,
    port_is_free,
)
from emomesh.triton_repo import load_specs

# Lines of a real tritonserver log (nvidia-pytriton's 2.51) with a corrupt model.onnx, then with a
# config.pbtxt that does not parse.
CORRUPT_ONNX_LOG = "\n".join(
    [
        'I1201 20:10:37.594371 29169 model_lifecycle.cc:472] "loading: fer_mini_xception:1"',
        "E1201 20:10:41.213944 29169 model_lifecycle.cc:642] \"failed to load 'fer_mini_xception' version 1: "
        "Internal: InvalidProtobuf: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from "
        "/s/repo/fer_mini_xception/1/model.onnx failed:Protobuf parsing failed.\\n\\nAt:\\n  "
        '/venv/onnxruntime_inference_collection.py(753): _create_inference_session\\n"',
        "I1201 20:10:41.214014 29169 model_lifecycle.cc:777] \"failed to load 'fer_mini_xception'\"",
        "| fer_mini_xception | 1       | UNAVAILABLE: Internal: InvalidProtobuf: [ONNXRuntimeError] : 7 |",
        "error: creating server: Internal - failed to load all models",
    ]
)
BAD_CONFIG_LOG = "\n".join(
    [
        "[libprotobuf ERROR text_format.cc:337] Error parsing text-format inference.ModelConfig: 1:17: "
        "Expected integer, got: oops",
        'E1201 20:10:46.993606 29818 model_repository_manager.cc:1460] "Poll failed for model directory '
        "'audio_acrnn': failed to read text proto from /s/repo/audio_acrnn/config.pbtxt\"",
        "error: creating server: Internal - failed to load all models",
    ]
)


def test_the_failing_model_and_the_first_line_of_its_error_from_tritons_log() -> None:
    assert model_load_errors(CORRUPT_ONNX_LOG) == {
        "fer_mini_xception": "Internal: InvalidProtobuf: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model "
        "from /s/repo/fer_mini_xception/1/model.onnx failed:Protobuf parsing failed."
    }
    assert model_load_errors(BAD_CONFIG_LOG) == {
        "audio_acrnn": "failed to read text proto from /s/repo/audio_acrnn/config.pbtxt"
    }
    assert model_load_errors("I1201 loading: x:1\n") == {}
    assert last_log_line(CORRUPT_ONNX_LOG) == "error: creating server: Internal - failed to load all models"


@contextlib.contextmanager
def listening() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_model_assembled_at_setup_must_be_there_before_the_stack_starts(tmp_path: Path) -> None:
    specs: dict[str, dict[str, object]] = {
        "committed": {"max_batch_size": 8},
        "audio_whisper_emotion": {"assembled_by": "python -m services.audio.whisper_model"},
    }
    with pytest.raises(ModelLoadFailed) as missing:
        check_assembled_models(specs, tmp_path)
    message = str(missing.value)
    assert "audio_whisper_emotion (`python -m services.audio.whisper_model`) is assembled at setup" in message
    assert message.endswith("run `bash scripts/setup.sh`") and "committed (" not in message
    onnx = tmp_path / "audio_whisper_emotion" / "1" / "model.onnx"
    onnx.parent.mkdir(parents=True)
    onnx.write_bytes(b"model")
    check_assembled_models(specs, tmp_path)
    # The project's own repository, after setup: every assembled model is there.
    check_assembled_models(load_specs(), MODEL_REPOSITORY)


def test_busy_ports_are_named_with_what_they_are_for_and_who_holds_them() -> None:
    free = free_port()
    assert port_is_free(free)
    check_ports({"vision gRPC": free, "disabled metrics": 0})
    with listening() as busy:
        assert not port_is_free(busy)
        with pytest.raises(PortInUse) as err:
            check_ports({"vision gRPC": free, "Triton HTTP": busy})
    message = str(err.value)
    assert f"port {busy} (Triton HTTP, held by pid {os.getpid()}: " in message
    assert str(free) not in message
    assert "--ephemeral-ports" in message and err.value.exit_code == 3


def test_missing_binaries_name_the_setup_script(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingBinary, match=r"no-such-server is not installed .*bash scripts/setup\.sh"):
        check_binary("no-such-server")

    def not_installed() -> Path:
        raise tritonserver.TritonNotInstalled("nvidia-pytriton is not installed: pip install 'emomesh[embedded]'")

    monkeypatch.setattr(tritonserver, "_pytriton_root", not_installed)
    with pytest.raises(MissingBinary, match=r"tritonserver is not available: nvidia-pytriton .*setup\.sh") as err:
        check_tritonserver()
    assert err.value.exit_code == 4


HOLD_LOCK = """
import sys, time
from pathlib import Path
from emomesh.startup import StateLock
lock = StateLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_one_stack_per_state_directory_until_the_holder_ends_even_by_sigkill(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(StackLocked) as err:
            StateLock(tmp_path).acquire()
        assert f"another `emomesh up` (pid {holder.pid}) is running with the state directory {tmp_path}" in str(
            err.value
        )
        assert "--state-dir" in str(err.value) and err.value.exit_code == 5
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.communicate()
    lock = StateLock(tmp_path)
    lock.acquire()  # the kernel released the killed holder's lock
    assert lock.held and (tmp_path / "stack.lock").read_text().strip() == str(os.getpid())
    lock.release()
    again = StateLock(tmp_path)
    again.acquire()
    again.release()
