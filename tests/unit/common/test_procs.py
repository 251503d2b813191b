"""free_port: ports that nothing listens on, away from the kernel's ephemeral range (where client connections
take their local ports), so a port found free is still free when a service binds it."""

from __future__ import annotations

import contextlib
import socket

import pytest

from emomesh import procs
from emomesh.procs import FREE_PORT_RANGE, free_port


def test_free_ports_are_bindable_and_outside_the_ephemeral_range() -> None:
    ports = {free_port() for _ in range(20)}
    low, high = FREE_PORT_RANGE
    assert all(low <= port <= high for port in ports)
    assert high < 32768  # Linux's default ip_local_port_range starts there
    for port in ports:
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_someone_listens_on_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        busy = taken.getsockname()[1]
        other = free_port()
        draws = iter([busy, busy, other])
        monkeypatch.setattr(procs._free_ports, "randint", lambda low, high: next(draws))
        assert free_port() == other  # the listened-on port was drawn twice and passed over
