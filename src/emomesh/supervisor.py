"""Keeps the embedded stack's child processes running: what `emomesh up` does while it waits.

Each `step()` polls every child (which also reaps it, so no zombie is left), and for one that exited:
logs which child, how it ended and how long it had run, ends what it left in its process group
(Triton's Python-backend stubs), and schedules a restart after an exponential backoff. A child that
keeps crashing soon after each start makes the supervisor give up (`GaveUp`, with the reason and the
log to read) instead of restarting it for ever. A restart can wait for a requirement: a service is
restarted only once Triton is ready again, so it does not crash-loop on a missing model.

`run()` loops in the calling thread (the CLI's main loop); `start()`/`stop()` run it in a thread
(tests, benches)."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from emomesh.procs import describe_exit

log = logging.getLogger(__name__)


class Supervised(Protocol):
    """A child process the supervisor can restart (TritonServer, RedisServer, a service)."""

    @property
    def name(self) -> str: ...

    @property
    def process(self) -> subprocess.Popen[bytes] | None: ...

    log_path: Path

    def start(self) -> None:
        """Starts a new process (may wait briefly for it to answer, not for it to be ready)."""

    def is_ready(self) -> bool: ...

    def clean_up_after_exit(self) -> None:
        """Ends what the exited process left behind (its process group) and frees its resources."""


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff doubles from initial_delay_s up to max_delay_s while a child keeps crashing; a child
    that ran stable_after_s before it exited starts over from initial_delay_s. After max_restarts
    restarts in a row that each crashed within stable_after_s, the supervisor gives up."""

    initial_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0
    max_restarts: int = 5

    def delay(self, attempt: int) -> float:
        return float(min(self.initial_delay_s * 2 ** (attempt - 1), self.max_delay_s))


class GaveUp(RuntimeError):
    """A child crashed again and again right after being restarted; restarting it once more is useless."""


@dataclass
class Restart:
    """One exit and what the supervisor did about it; times are time.monotonic() values."""

    name: str
    exit: str
    attempt: int
    delay_s: float
    exited_at: float
    restarted_at: float | None = None
    ready_at: float | None = None
    pid: int | None = None


@dataclass
class _Watched:
    child: Supervised
    # None for a child that was already running when supervision began (its age is unknown).
    started_at: float | None
    attempt: int = 0
    restart_at: float | None = None
    waiting_logged: bool = False
    history: list[Restart] = field(default_factory=list)


class Supervisor:
    """Restarts the children that exit. `requires` maps a child's name to a predicate that must hold
    before it is restarted (e.g. Triton ready before a model service)."""

    def __init__(
        self,
        children: Sequence[Supervised],
        policy: RestartPolicy | None = None,
        requires: Mapping[str, Callable[[], bool]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy or RestartPolicy()
        self.requires = dict(requires or {})
        self.clock = clock
        self._watched = [_Watched(child, None) for child in children]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.gave_up: GaveUp | None = None

    @property
    def restarts(self) -> list[Restart]:
        """Every exit seen so far, in order."""
        return sorted((r for w in self._watched for r in w.history), key=lambda r: r.exited_at)

    def step(self) -> None:
        """One pass over the children. Raises GaveUp when a child crashed too often in a row."""
        for watched in self._watched:
            if watched.restart_at is None:
                self._check(watched)
            else:
                self._maybe_restart(watched)

    def _check(self, watched: _Watched) -> None:
        child, process = watched.child, watched.child.process
        if process is None:
            return  # never started (e.g. no service needs Redis)
        returncode = process.poll()  # reaps it when it has exited
        now = self.clock()
        if returncode is None:
            last = watched.history[-1] if watched.history else None
            if last is not None and last.ready_at is None and child.is_ready():
                last.ready_at = now
                log.warning(
                    "%s is ready again %.1fs after it exited (pid %d)", child.name, now - last.exited_at, process.pid
                )
            return
        ran = "" if watched.started_at is None else f" after {now - watched.started_at:.1f}s"
        stable = watched.started_at is None or now - watched.started_at >= self.policy.stable_after_s
        exit_text = describe_exit(returncode)
        child.clean_up_after_exit()
        watched.attempt = 1 if stable else watched.attempt + 1
        if watched.attempt > self.policy.max_restarts:
            raise GaveUp(
                f"{child.name} exited ({exit_text}){ran}; it was restarted {self.policy.max_restarts} times in a "
                f"row and each time crashed within {self.policy.stable_after_s:.0f}s, so it is not restarted "
                f"again. See {child.log_path}"
            )
        delay = self.policy.delay(watched.attempt)
        watched.restart_at = now + delay
        watched.waiting_logged = False
        watched.history.append(Restart(child.name, exit_text, watched.attempt, delay, now))
        log.warning(
            "%s (pid %d) exited with %s%s; restart attempt %d in %.1fs (log: %s)",
            child.name,
            process.pid,
            exit_text,
            ran,
            watched.attempt,
            delay,
            child.log_path,
        )

    def _maybe_restart(self, watched: _Watched) -> None:
        assert watched.restart_at is not None
        if self.clock() < watched.restart_at:
            return
        child = watched.child
        required = self.requires.get(child.name)
        if required is not None and not required():
            if not watched.waiting_logged:
                log.warning("%s waits for its dependencies before it is restarted", child.name)
                watched.waiting_logged = True
            return
        try:
            child.start()
        except Exception as exc:  # e.g. redis-server exits at once: its exit counts as the next crash
            log.error("%s could not be restarted: %s", child.name, exc)
        now = self.clock()
        watched.started_at, watched.restart_at = now, None
        restart = watched.history[-1]
        restart.restarted_at = now
        restart.pid = child.process.pid if child.process is not None else None
        log.warning("%s restarted (attempt %d, pid %s)", child.name, watched.attempt, restart.pid)

    def run(self, stop: threading.Event, interval_s: float = 0.2) -> None:
        """Steps until stop is set. Raises GaveUp."""
        while not stop.is_set():
            self.step()
            stop.wait(interval_s)

    def start(self, interval_s: float = 0.2) -> None:
        """Runs in a daemon thread; a GaveUp ends the thread and is kept in self.gave_up."""

        def loop() -> None:
            try:
                self.run(self._stop, interval_s)
            except GaveUp as exc:
                log.error("%s", exc)
                self.gave_up = exc

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name="emomesh-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread (if any) and waits for the step in progress, so that nothing is restarted
        once this returns."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
