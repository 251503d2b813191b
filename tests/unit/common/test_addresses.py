"""Where client commands find the stack (emomesh.addresses): flags, then --stack's endpoints.json,
then EMOMESH_CLIENT_<SERVICE>_ADDR (Triton: EMOMESH_TRITON_URL), then the documented ports."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emomesh.addresses import TRITON, AddressError, Addresses, add_address_arguments, documented_address
from emomesh.stack import SERVICES, StackEndpoints


def parse(*argv: str, services: tuple[str, ...] = ("fusion", "vision"), triton: bool = True) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_address_arguments(parser, services, triton=triton)
    return parser.parse_args(list(argv))


def write_stack(state_dir: Path, pid: int | None = None, services: tuple[str, ...] = ("vision", "fusion")) -> None:
    endpoints = StackEndpoints(
        pid=os.getpid() if pid is None else pid,
        state_dir=str(state_dir),
        services={name: {"grpc": f"127.0.0.1:{40000 + i}", "metrics": "http://x"} for i, name in enumerate(services)},
        triton={"grpc": "127.0.0.1:41001", "http": "http://127.0.0.1:41000", "metrics": "http://127.0.0.1:41002"},
        redis=None,
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "endpoints.json").write_text(endpoints.to_json())


def test_documented_ports_by_default() -> None:
    book = Addresses.from_args(parse(), environ={})
    assert book.address("fusion") == "127.0.0.1:50054"
    assert book.address(TRITON) == "127.0.0.1:8001"
    assert book.services() == tuple(spec.name for spec in SERVICES)
    assert [documented_address(spec.name) for spec in SERVICES] == [f"127.0.0.1:{s.default_port}" for s in SERVICES]


def test_flags_beat_the_stack_which_beats_the_environment(tmp_path: Path) -> None:
    write_stack(tmp_path)
    environ = {"EMOMESH_CLIENT_FUSION_ADDR": "env-host:1", "EMOMESH_CLIENT_VISION_ADDR": "env-host:2"}
    assert Addresses.from_args(parse(), environ=environ).address("fusion") == "env-host:1"
    with_stack = Addresses.from_args(parse("--stack", str(tmp_path)), environ=environ)
    assert with_stack.address("fusion") == "127.0.0.1:40001"
    assert with_stack.address(TRITON) == "127.0.0.1:41001"
    flagged = Addresses.from_args(
        parse("--stack", str(tmp_path), "--fusion", "flag:1", "--address", "vision=flag:2"), environ=environ
    )
    assert (flagged.address("fusion"), flagged.address("vision")) == ("flag:1", "flag:2")
    assert Addresses.from_args(parse(), environ={"EMOMESH_TRITON_URL": "triton:9"}).address(TRITON) == "triton:9"


def test_bare_address_only_where_the_command_talks_to_one_service() -> None:
    assert Addresses.from_args(parse("--address", "h:1"), bare_address=True, environ={}).address("fusion") == "h:1"
    with pytest.raises(AddressError, match="expected SERVICE=HOST:PORT"):
        Addresses.from_args(parse("--address", "h:1"), environ={})
    with pytest.raises(AddressError, match="SERVICE is one of vision, audio"):
        Addresses.from_args(parse("--address", "vison=h:1"), environ={})
    with pytest.raises(AddressError, match="no HOST:PORT"):
        Addresses.from_args(parse("--address", "vision="), environ={})


def test_stack_that_is_not_running_is_named(tmp_path: Path) -> None:
    with pytest.raises(AddressError, match=r"no stack is running with the state directory .*endpoints\.json"):
        Addresses.from_args(parse("--stack", str(tmp_path)), environ={})
    # endpoints.json left behind by a launcher that was killed (here: a process that has ended).
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_stack(tmp_path, pid=int(ended.stdout))
    with pytest.raises(AddressError, match=rf"written by pid {int(ended.stdout)}, which has ended"):
        Addresses.from_args(parse("--stack", str(tmp_path)), environ={})
    (tmp_path / "endpoints.json").write_text("{not json")
    with pytest.raises(AddressError, match="not an endpoints file"):
        Addresses.from_args(parse("--stack", str(tmp_path)), environ={})


def test_a_service_the_stack_does_not_run(tmp_path: Path) -> None:
    write_stack(tmp_path, services=("vision", "fusion"))
    book = Addresses.from_args(parse("--stack", str(tmp_path), "--dialog", "d:1", services=("dialog",)), environ={})
    assert book.services() == ("vision", "fusion", "dialog")
    with pytest.raises(AddressError, match=r"does not run the audio service \(it runs vision, fusion\)"):
        book.address("audio")
