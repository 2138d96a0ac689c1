"""A launch's own decisions, with a stand-in for its supervisor (no backend, no server)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from backend.launch import Launch
from lifecycle import SimState


class WatchedLock:
    """The lifecycle's re-entrant lock, telling when a thread other than its first
    holder tries to take it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._holder: threading.Thread | None = None
        self.tried = threading.Event()

    def __enter__(self) -> WatchedLock:
        if self._holder is not None and self._holder is not threading.current_thread():
            self.tried.set()
        self._lock.acquire()
        self._holder = self._holder or threading.current_thread()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()


class Supervisor:
    """What a launch reads of its supervisor to decide whether the server may start by
    itself: the lifecycle (its lock, its state) and the record."""

    def __init__(self) -> None:
        self.sim_id, self.rt, self.run_dir = "s1", None, Path("/nonexistent")
        self.lifecycle = type("Lifecycle", (), {"lock": WatchedLock()})()
        self.state = SimState.INITIALIZED
        self.snapshot = {"state": SimState.INITIALIZED.value}
        self.saved = threading.Event()

    def wait_saved(self, timeout: float) -> bool:
        return self.saved.wait(timeout)


def test_a_post_started_still_on_its_way_to_started_is_waited_for() -> None:
    """``POST`` "started" moves created -> initialized -> started in one request, under
    the lifecycle's lock, and the launch begins at the first step: it waits for the
    request's end, and the server starts by itself, instead of reading "initialized" and
    leaving the start to a command a round trip later."""
    sup = Supervisor()
    launch = Launch(sup)
    answer: list[bool] = []
    with sup.lifecycle.lock:  # the request, between its two transitions
        asking = threading.Thread(target=lambda: answer.append(launch._started_on_record()))
        asking.start()
        assert sup.lifecycle.lock.tried.wait(5), "the launch read the state without the lock"
        sup.state, sup.snapshot = SimState.STARTED, {"state": SimState.STARTED.value}
        sup.saved.set()
    asking.join(5)
    assert answer == [True]


def test_a_run_asked_only_to_initialize_is_started_by_command() -> None:
    sup = Supervisor()
    sup.saved.set()
    assert Launch(sup)._started_on_record() is False
