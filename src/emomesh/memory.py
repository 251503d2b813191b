"""Giving freed heap memory back to the operating system.

glibc's malloc keeps memory that Python and gRPC free in its arenas, to reuse it, and only returns
what sits at the top of the main heap. After a burst of large requests (gRPC receives each message
in many small buffers, then copies it into one `bytes`) the freed memory is scattered through the
arenas and the process stays at its peak size: 200 refused 30 MB requests left the vision service at
5 GiB. `malloc_trim(0)` walks every arena and releases the free pages inside them as well.

The server calls `request_done` after each request; a request of at least `min_bytes` schedules a
trim, at most one per `min_interval_s`, run shortly after the call ends (its buffers are freed only
then). A periodic trim (`run`) catches memory freed outside a request, e.g. messages gRPC refused by
size before any handler ran. MALLOC_ARENA_MAX=2 (set in the images, the manifests and the embedded
stack) caps the arenas a process spreads over, so less memory is stranded in the first place.

A no-op where the C library has no malloc_trim (musl, macOS).

`container_memory_limit` reads the pod's memory limit from the cgroup, for the gauge
emomesh_memory_limit_bytes that the alert EmomeshMemoryNearLimit compares the resident memory with."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


# cgroup v1 reports "no limit" as a page-rounded 2^63 - 1; anything this large is no limit.
_UNLIMITED_V1 = 1 << 60


def container_memory_limit(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit of this process's container in bytes (cgroup v2 `memory.max`, else v1
    `memory/memory.limit_in_bytes`), or None when there is none or it cannot be read."""
    for path in (cgroup_root / "memory.max", cgroup_root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < _UNLIMITED_V1:
            return int(text)
        return None
    return None


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def trim_heap() -> bool:
    """Returns free heap pages to the OS now; False when this C library cannot."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


class HeapTrimmer:
    """Throttled malloc_trim after large requests, plus a periodic one. Event loop thread only."""

    def __init__(
        self,
        min_bytes: int = 1024 * 1024,
        min_interval_s: float = 1.0,
        period_s: float = 30.0,
        delay_s: float = 0.2,
    ) -> None:
        self.min_bytes = min_bytes
        self.min_interval_s = min_interval_s
        self.period_s = period_s
        self.delay_s = delay_s
        self.trims = 0
        self._last = -float("inf")
        self._pending: asyncio.TimerHandle | None = None

    def request_done(self, nbytes: int) -> None:
        """A request of nbytes has finished (or been refused); trims soon if it was large."""
        if nbytes < self.min_bytes or self._pending is not None or _MALLOC_TRIM is None:
            return
        wait = max(self.delay_s, self._last + self.min_interval_s - time.monotonic())
        self._pending = asyncio.get_running_loop().call_later(wait, self._trim)

    def _trim(self) -> None:
        self._pending = None
        start = time.monotonic()
        trim_heap()
        self._last = time.monotonic()
        self.trims += 1
        log.debug("heap trimmed", extra={"fields": {"trim_ms": round((self._last - start) * 1000, 2)}})

    async def run(self) -> None:
        """Trims every period_s until cancelled."""
        while True:
            await asyncio.sleep(self.period_s)
            self._trim()

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
