"""The supervisor of `emomesh up` with real (tiny) child processes and a clock the test moves:
exits are reaped, logged and restarted after the backoff; what a child left in its process group is
killed; repeated fast crashes give up with the reason; restarts wait for their requirements."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emomesh.procs import kill_process_group, process_group_members
from emomesh.supervisor import GaveUp, RestartPolicy, Supervisor

# A process group member that ignores SIGTERM, as Triton's Python-backend stubs do.
STUBBORN = "trap '' TERM; sleep 600"


class ShellChild:
    """A child of the supervisor: `sh -c script` in a session (and process group) of its own."""

    def __init__(self, name: str, script: str, log_path: Path) -> None:
        self.name, self.script, self.log_path = name, script, log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.process = subprocess.Popen(["sh", "-c", self.script], start_new_session=True)

    def is_ready(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def clean_up_after_exit(self) -> None:
        if self.process is not None:
            kill_process_group(self.process.pid, grace_s=0.2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def children(tmp_path: Path) -> Iterator[list[ShellChild]]:
    made: list[ShellChild] = []
    yield made
    for child in made:
        if child.process is not None:
            if child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
            kill_process_group(child.process.pid, grace_s=0)


def child(children: list[ShellChild], tmp_path: Path, name: str, script: str) -> ShellChild:
    made = ShellChild(name, script, tmp_path / f"{name}.log")
    made.start()
    children.append(made)
    return made


def step_until(supervisor: Supervisor | None, done: Callable[[], bool]) -> None:
    """Steps (if given a supervisor) until done(): a real process has to exit or start first.
    Bounded, so that a bug fails the test instead of hanging it."""
    for _ in range(500):
        if supervisor is not None:
            supervisor.step()
        if done():
            return
        time.sleep(0.02)
    raise AssertionError("did not get there")


def restarted_more_than(supervisor: Supervisor, count: int) -> Callable[[], bool]:
    return lambda: len(supervisor.restarts) > count


def ignores_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    return bool(ignored & (1 << (signal.SIGTERM - 1)))


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return False


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RestartPolicy(initial_delay_s=0.5, max_delay_s=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_killed_child_is_reaped_logged_and_restarted_after_the_backoff(
    children: list[ShellChild], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    redis = child(children, tmp_path, "redis-server", "sleep 600")
    supervisor = Supervisor([redis], RestartPolicy(initial_delay_s=2.0), clock=clock)
    assert redis.process is not None
    old = redis.process.pid
    os.kill(old, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="emomesh.supervisor"):
        step_until(supervisor, lambda: bool(supervisor.restarts))
        (restart,) = supervisor.restarts
        assert (restart.name, restart.exit) == ("redis-server", "signal SIGKILL")
        assert (restart.attempt, restart.delay_s) == (1, 2.0)
        assert not is_zombie(old) and not Path(f"/proc/{old}").exists()
        assert f"redis-server (pid {old}) exited with signal SIGKILL" in caplog.text
        assert "restart attempt 1 in 2.0s" in caplog.text
        # Not before the backoff has passed.
        clock.now += 1.9
        supervisor.step()
        assert redis.starts == 1
        clock.now += 0.2
        supervisor.step()
    assert redis.starts == 2 and redis.process.pid != old
    assert restart.restarted_at == clock.now and restart.pid == redis.process.pid
    assert "redis-server restarted (attempt 1" in caplog.text
    supervisor.step()
    assert restart.ready_at == clock.now


def test_what_a_crashed_child_left_in_its_group_is_killed(children: list[ShellChild], tmp_path: Path) -> None:
    server = child(children, tmp_path, "tritonserver", f'sh -c "{STUBBORN}" & sleep 600')
    assert server.process is not None
    pgid = server.process.pid
    step_until(None, lambda: len(process_group_members(pgid)) >= 3)  # sh, the stub's sh, sleeps
    supervisor = Supervisor([server], RestartPolicy(initial_delay_s=60))
    os.kill(pgid, signal.SIGKILL)
    step_until(supervisor, lambda: bool(supervisor.restarts))
    assert process_group_members(pgid) == []


def test_kill_process_group_sigkills_members_that_ignore_sigterm(children: list[ShellChild], tmp_path: Path) -> None:
    stub = child(children, tmp_path, "stub", STUBBORN)
    assert stub.process is not None
    pid = stub.process.pid
    step_until(None, lambda: ignores_sigterm(pid))  # the trap is installed
    kill_process_group(stub.process.pid, grace_s=0.2)
    assert stub.process.wait() == -signal.SIGKILL
    assert process_group_members(stub.process.pid) == []


def test_repeated_fast_crashes_give_up_with_the_reason(children: list[ShellChild], tmp_path: Path) -> None:
    clock = Clock()
    audio = child(children, tmp_path, "audio", "exit 3")
    supervisor = Supervisor([audio], RestartPolicy(initial_delay_s=1.0, max_restarts=2), clock=clock)

    def crashed_again() -> bool:
        clock.now += 10  # past any backoff, well within stable_after_s
        return False

    with pytest.raises(GaveUp) as gave_up:
        step_until(supervisor, crashed_again)
    assert audio.starts == 3  # the first start and two restarts
    assert [r.attempt for r in supervisor.restarts] == [1, 2]
    message = str(gave_up.value)
    assert "audio exited (exit code 3)" in message and "restarted 2 times in a row" in message
    assert str(tmp_path / "audio.log") in message


def test_a_child_that_ran_long_enough_starts_over_from_the_first_delay(
    children: list[ShellChild], tmp_path: Path
) -> None:
    clock = Clock()
    text = child(children, tmp_path, "text", "sleep 600")
    policy = RestartPolicy(initial_delay_s=1.0, stable_after_s=60, max_restarts=2)
    supervisor = Supervisor([text], policy, clock=clock)
    for expected_attempt in (1, 2, 1, 2):
        if expected_attempt == 1:
            clock.now += 61  # ran long enough
        assert text.process is not None
        os.kill(text.process.pid, signal.SIGKILL)
        step_until(supervisor, restarted_more_than(supervisor, len(supervisor.restarts)))
        assert supervisor.restarts[-1].attempt == expected_attempt
        clock.now += 10
        supervisor.step()
    assert text.starts == 5


def test_a_restart_waits_for_its_requirement(children: list[ShellChild], tmp_path: Path) -> None:
    clock = Clock()
    vision = child(children, tmp_path, "vision", "sleep 600")
    triton_ready = False
    supervisor = Supervisor([vision], RestartPolicy(initial_delay_s=1.0), {"vision": lambda: triton_ready}, clock)
    assert vision.process is not None
    os.kill(vision.process.pid, signal.SIGKILL)
    step_until(supervisor, lambda: bool(supervisor.restarts))
    clock.now += 100
    supervisor.step()
    assert vision.starts == 1
    triton_ready = True
    supervisor.step()
    assert vision.starts == 2


def test_in_a_thread_it_restarts_until_stopped_and_keeps_why_it_gave_up(
    children: list[ShellChild], tmp_path: Path
) -> None:
    dialog = child(children, tmp_path, "dialog", "exit 1")
    supervisor = Supervisor([dialog], RestartPolicy(initial_delay_s=0.01, max_restarts=3))
    supervisor.start(interval_s=0.01)
    try:
        step_until(None, lambda: supervisor.gave_up is not None)
    finally:
        supervisor.stop()
    assert dialog.starts == 4
    assert "dialog exited (exit code 1)" in str(supervisor.gave_up)


class FailingStart(ShellChild):
    """A child whose restart fails (its binary vanished, its port is taken)."""

    def start(self) -> None:
        if self.starts:
            self.starts += 1
            raise FileNotFoundError("no such binary")
        super().start()


def test_a_restart_that_fails_counts_as_a_crash(children: list[ShellChild], tmp_path: Path) -> None:
    clock = Clock()
    redis = FailingStart("redis-server", "exit 1", tmp_path / "redis.log")
    redis.start()
    children.append(redis)
    supervisor = Supervisor([redis], RestartPolicy(initial_delay_s=1.0, max_restarts=2), clock=clock)

    def later() -> bool:
        clock.now += 10
        return False

    with pytest.raises(GaveUp):
        step_until(supervisor, later)
    assert redis.starts == 3
