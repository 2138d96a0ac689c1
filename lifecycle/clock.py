"""Running time: wall-clock seconds a simulation spent started, pauses left out.

The simulation server counts it for the real-time timeout of ``run_loop``; the
backend counts it for scripts that never call ``run_loop``. Both use this one
class, so the two sides agree on what "running" means.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class RunningTime:
    """Accumulates the seconds between :meth:`run` and :meth:`hold`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._banked = 0.0
        self._since: float | None = None

    @property
    def running(self) -> bool:
        return self._since is not None

    def run(self) -> float:
        """Start (or keep) counting; return the clock's reading."""
        with self._lock:
            now = self._clock()
            if self._since is None:
                self._since = now
            return now

    def hold(self) -> None:
        """Stop counting, keeping what was counted."""
        with self._lock:
            if self._since is not None:
                self._banked += self._clock() - self._since
                self._since = None

    def reset(self, seconds: float, running: bool) -> None:
        """Take over a count made elsewhere (after a restart: the server's own)."""
        with self._lock:
            self._banked = float(seconds)
            self._since = self._clock() if running else None

    def reading(self) -> tuple[float, float | None]:
        """(seconds banked, the clock's reading it has run since or None): what
        another process on this host needs to tell :meth:`elapsed` (see
        ``lifecycle.live``)."""
        with self._lock:
            return self._banked, self._since

    def elapsed(self) -> float:
        since = self._since
        return self._banked + (self._clock() - since if since is not None else 0.0)
