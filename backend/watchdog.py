"""The watchdog: checks the limits of every running simulation, a few times a second:
memory and real time, and the disk (logs cut to their cap, results measured)."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from backend.disk_limits import cap_logs, folder_size, results_breach
from backend.launchers import ServerHandle
from backend.limits import MIB, Limits
from lifecycle import SimState
from lifecycle.messages import LOGS_DIR, RESULTS_DIR

logger = logging.getLogger(__name__)


class Watched(Protocol):
    """What the watchdog reads of a simulation (its supervisor)."""

    sim_id: str
    run_dir: Path
    server: ServerHandle | None
    limits: Limits | None
    link: Any
    limit_hit: bool
    resources: dict[str, float]
    mailbox: Any
    rt: Any
    state: SimState

    def fail(self, error: dict[str, Any], grace: float | None = None) -> None: ...


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
                    check_limits(sup)
                except Exception:
                    logger.exception("watchdog: checking sim %s failed", sup.sim_id)


def check_limits(sup: Watched) -> None:
    """Measure one simulation; fail it (on its mailbox) once it breaks a limit."""
    server, limits = sup.server, sup.limits
    if server is None or limits is None or sup.limit_hit or server.exited.is_set() \
            or sup.state.is_terminal:
        return
    sup.resources = server.resources()
    config = sup.rt.config
    # Half the cap is kept, so a log spewing without end is cut now and then, not
    # at every check.
    cap_logs(sup.run_dir / LOGS_DIR, config.max_log_bytes, config.max_log_bytes // 2)
    grace = config.stop_grace
    error = limit_breach(limits, sup.resources, sup.link.running.elapsed(), grace) or \
        (results_breach(folder_size(sup.run_dir / RESULTS_DIR), config.max_results_bytes)
         if config.max_results_bytes else None)
    if error is not None:
        sup.limit_hit = True
        sup.mailbox.post(sup.fail, error, min(grace, 2.0))


def limit_breach(limits: Limits, resources: dict[str, float], running: float,
                 grace: float) -> dict[str, Any] | None:
    """The error of a simulation over a limit, or None.

    ``running`` is the seconds it has been started; a script that does not call
    ``run_loop`` is past its real-time timeout once ``grace`` more seconds went by.
    """
    rss = resources["rss_bytes"]
    if limits.memory_bytes and rss > limits.memory_bytes:
        return {"type": "memory_limit", "rss_bytes": rss, "limit_bytes": limits.memory_bytes,
                "message": f"the simulation used {rss / MIB:.0f} MiB, over its limit of "
                           f"{limits.memory_bytes / MIB:.0f} MiB"}
    if limits.real_time and running > limits.real_time + grace:
        return {"type": "real_time_limit",
                "message": f"the script did not end within its real-time timeout of "
                           f"{limits.real_time:g} s (it does not call run_loop?)"}
    return None
