"""The watchdog: checks the limits of every running simulation, a few times a second."""
from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable, Protocol

logger = logging.getLogger(__name__)


class Watched(Protocol):
    sim_id: str

    def check_limits(self) -> None: ...


class Watchdog:
    """One thread for all simulations: memory (RSS of the process tree) and the
    real-time limit of scripts that do not call ``run_loop``."""

    def __init__(self, running: Callable[[], Iterable[Watched]], interval: float) -> None:
        self._running = running
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _watch(self) -> None:
        while not self._stopped.wait(self._interval):
            for sup in self._running():
                try:
                    sup.check_limits()
                except Exception:
                    logger.exception("watchdog: checking sim %s failed", sup.sim_id)
