"""The fan-out of live events to subscribers.

Publishers never wait for a subscriber: :meth:`Subscription.offer` appends to a bounded
queue and returns; a subscriber whose queue is full is *dropped* (its stream ends with a
``dropped`` event giving the id to resume from), so a stalled client costs its own
stream and nothing else. Persisted events are published by the supervisor's mailbox once
saved (the registry has one writer per simulation); the hub's own pump thread reads log
lines and status ticks, and only for simulations someone follows.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable

from backend.events.logs import LogTail
from backend.exceptions import TooManyStreams
from backend.registry import StoredEvent

if TYPE_CHECKING:
    from backend.supervisor import SimulationSupervisor

logger = logging.getLogger(__name__)

#: Live events a subscriber may have waiting before it is dropped.
MAX_QUEUED = 2000
#: Seconds between two looks at the log files of followed simulations.
LOG_POLL = 0.05


@dataclass(frozen=True)
class Event:
    """One event of a simulation. ``id`` is set for persisted events (state, end);
    ``raw`` holds a log event's bytes (``data``: file and offset); ``record`` is the
    simulation's record when it was published, for visibility checks (never sent)."""

    type: str
    sim_id: str
    data: dict[str, Any]
    id: int | None = None
    raw: bytes = b""
    record: dict[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def stored(cls, event: StoredEvent, record: dict[str, Any] | None = None) -> Event:
        return cls(event.type, event.sim_id, event.data, event.id, record=record)

    @cached_property
    def payload(self) -> str:
        """The JSON of its ``data`` as sent (made once, however many streams send it)."""
        data = {"sim_id": self.sim_id, **self.data}
        if self.type == "log":
            data["text"] = self.raw.decode("utf-8", "replace")
        return json.dumps(data, separators=(",", ":"))


def end_data(record: dict[str, Any]) -> dict[str, Any]:
    """What an ``end`` event says: the final state, error and exit code."""
    return {"state": record["state"], "error": record["error"],
            "exit_code": record["exit_code"], "ended_at": record["ended_at"]}


class Subscription:
    """One subscriber: a bounded queue of the events it wants."""

    def __init__(self, sim_id: str | None, logs: bool, status: bool, max_queued: int) -> None:
        self.sim_id = sim_id            # None: every simulation
        self.logs = logs and sim_id is not None
        self.status = status
        self.max_queued = max_queued
        self.dropped: str | None = None  # why it was dropped
        self.closed = False
        self._queue: deque[Event] = deque()
        self._cond = threading.Condition()

    def wants(self, event: Event) -> bool:
        if event.type == "log":
            return self.logs
        return self.status or event.type != "status"

    def offer(self, event: Event) -> None:
        """Queue ``event``; never blocks. Over the bound, the subscriber is dropped."""
        with self._cond:
            if self.dropped or self.closed:
                return
            if len(self._queue) >= self.max_queued:
                self._drop(f"it fell {self.max_queued} events behind")
                return
            self._queue.append(event)
            self._cond.notify()

    def drop(self, reason: str) -> None:
        with self._cond:
            self._drop(reason)

    def _drop(self, reason: str) -> None:
        if self.dropped is None:
            self.dropped = reason
            self._queue.clear()
            self._cond.notify()
            logger.info("dropped: an event subscriber of %s: %s", self.sim_id or "all", reason)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify()

    def take(self, timeout: float) -> list[Event]:
        """Everything queued, waiting up to ``timeout`` s for something (or a drop)."""
        with self._cond:
            if not self._queue and not self.dropped and not self.closed:
                self._cond.wait(timeout)
            events = list(self._queue)
            self._queue.clear()
            return events


class EventHub:
    """Subscribers by simulation; the pump that reads logs and status for them."""

    def __init__(self, status_interval: float, max_streams: int, max_files: int,
                 max_queued: int = MAX_QUEUED) -> None:
        self.status_interval = status_interval
        self.max_streams = max_streams
        self.max_files = max_files
        self.max_queued = max_queued
        self._lock = threading.Lock()
        self._by_sim: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self._tails: dict[str, LogTail] = {}
        self._closed = threading.Event()
        self._find: Callable[[str], SimulationSupervisor | None] = lambda sim_id: None
        self._running: Callable[[], list[SimulationSupervisor]] = list

    def start(self, find: Callable[[str], SimulationSupervisor | None],
              running: Callable[[], list[SimulationSupervisor]]) -> None:
        """Start the pump; ``find`` and ``running`` look simulations up for it."""
        self._find, self._running = find, running
        threading.Thread(target=self._pump, name="event-pump", daemon=True).start()

    def close(self) -> None:
        """End every stream and the pump."""
        self._closed.set()
        with self._lock:
            subs = list(self._all) + [s for group in self._by_sim.values() for s in group]
        for sub in subs:
            sub.close()

    # -- subscribers (request threads) ------------------------------------------------

    @property
    def streams(self) -> int:
        with self._lock:
            return len(self._all) + sum(len(group) for group in self._by_sim.values())

    def subscribe(self, sim_id: str | None, *, logs: bool = True,
                  status: bool = True) -> Subscription:
        """Raises: TooManyStreams: ``max_streams`` streams are open already."""
        sub = Subscription(sim_id, logs, status, self.max_queued)
        with self._lock:
            if self._closed.is_set():
                sub.closed = True
            if len(self._all) + sum(len(g) for g in self._by_sim.values()) >= self.max_streams:
                raise TooManyStreams(f"{self.max_streams} event streams are open already (the "
                                     "cap, --max-event-streams); close one or try again later")
            if sim_id is None:
                self._all.add(sub)
            else:
                self._by_sim.setdefault(sim_id, set()).add(sub)
            if sub.logs and sim_id not in self._tails:
                self._tails[sim_id] = self._new_tail(sim_id)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub.sim_id is None:
                self._all.discard(sub)
                return
            group = self._by_sim.get(sub.sim_id, set())
            group.discard(sub)
            if not group:
                self._by_sim.pop(sub.sim_id, None)
            if not any(s.logs for s in group):
                self._tails.pop(sub.sim_id, None)

    def _new_tail(self, sim_id: str) -> LogTail | None:
        sup = self._find(sim_id)
        if sup is None:
            return None
        tail = LogTail(sup.run_dir, self.max_files)
        tail.skip_to_end()
        return tail

    # -- publishing (any thread; never blocks) -------------------------------------------

    def publish(self, event: Event) -> None:
        with self._lock:
            subs = list(self._by_sim.get(event.sim_id, ()))
            if event.type != "log":
                subs += self._all
        for sub in subs:
            if sub.wants(event):
                sub.offer(event)

    # -- the pump ---------------------------------------------------------------------------

    def _pump(self) -> None:
        next_status = time.monotonic()
        while not self._closed.wait(LOG_POLL):
            try:
                self._read_logs()
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + self.status_interval
                    self._tick_status()
            except Exception:  # the pump must live on
                logger.exception("event pump failed")

    def _read_logs(self) -> None:
        with self._lock:
            tails = [(sim_id, tail) for sim_id, tail in self._tails.items() if tail is not None]
        for sim_id, tail in tails:
            for name, offset, data in tail.read():
                self.publish(Event("log", sim_id, {"file": name, "offset": offset}, raw=data))

    def _tick_status(self) -> None:
        with self._lock:
            everyone = any(s.status for s in self._all)
            ids = [i for i, group in self._by_sim.items() if any(s.status for s in group)]
        if everyone:
            sups = self._running()
        else:
            sups = [sup for sup in map(self._find, ids) if sup is not None]
        for sup in sups:
            self._publish_status(sup)

    def status_now(self, sup: SimulationSupervisor) -> None:
        """A status event of ``sup`` now, between the ticks, if anyone follows its status:
        its first step since a start or resume, which a follower would otherwise learn
        of up to ``status_interval`` later."""
        with self._lock:
            followed = any(s.status for s in self._all) or \
                any(s.status for s in self._by_sim.get(sup.sim_id, ()))
        if followed:
            self._publish_status(sup)

    def _publish_status(self, sup: SimulationSupervisor) -> None:
        event = status_event(sup)
        if event is not None:
            self.publish(event)


def status_event(sup: SimulationSupervisor) -> Event | None:
    """A status event of ``sup``'s run while its server lives and has built its kernel."""
    if sup.link.alive and sup.ready.is_set():
        return Event("status", sup.sim_id, sup.status(), record=sup.snapshot)
    return None
