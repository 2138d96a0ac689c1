"""The event stream: state changes, numbered, that the backend follows and can
resume from any sequence number after reconnecting."""
from __future__ import annotations

import threading
import time
from typing import Any


class EventLog:
    """An append-only list of events with a blocking read of what came after ``seq``."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def append(self, kind: str, **data: Any) -> dict[str, Any]:
        with self._cond:
            event = {"seq": len(self._events) + 1, "kind": kind, "time": time.time(), **data}
            self._events.append(event)
            self._cond.notify_all()
            return event

    def after(self, seq: int, wait: float = 0.0) -> list[dict[str, Any]]:
        """Return the events numbered above ``seq``, waiting up to ``wait`` s for one."""
        deadline = time.monotonic() + wait
        with self._cond:
            while len(self._events) <= seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            return self._events[max(seq, 0):]

    @property
    def last_seq(self) -> int:
        return len(self._events)
