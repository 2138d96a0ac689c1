"""One subscriber's event stream, as the bytes of ``text/event-stream``.

A stream subscribes first, then replays what the client has not seen (persisted events
after its cursor, log bytes after its offsets), then relays live events. Everything it
sends moves its cursor, and whatever arrives at or behind the cursor is skipped (or cut),
so replay and live events overlap without duplicates and meet without a gap: every event
once, in order of ids, whatever the client's ``Last-Event-ID`` was.
"""
from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

from backend.events.cursor import Cursor
from backend.events.hub import Event, EventHub, Subscription, end_data, status_event
from backend.events.logs import chunks, read_from
from backend.exceptions import BackendError
from lifecycle import SimState
from lifecycle.messages import LOGS_DIR
from backend.wsgi_server import StreamControl
from storage import StorageError

if TYPE_CHECKING:
    from backend.manager import SimulationManager

logger = logging.getLogger(__name__)

#: Seconds between two comments on a quiet stream (proxies close silent connections,
#: and a write is how a closed client is noticed).
HEARTBEAT = 15.0
#: Seconds a quiet stream waits before it looks whether its client went away.
_WAKE = 1.0
#: Persisted events read from the registry at a time while replaying.
_PAGE = 500
#: Sent first: how soon a client should reconnect (ms) after the connection is lost.
RETRY = b"retry: 1000\n\n"
KEEPALIVE = b": keep-alive\n\n"

#: Whether the caller may see a simulation, from its record.
Visible = Callable[[dict[str, Any]], bool]


def sse(type: str, data: dict[str, Any] | str, id: str | None = None) -> bytes:
    """One event on the wire; ``data`` as a dict or as its JSON already."""
    head = f"id: {id}\n" if id is not None else ""
    if not isinstance(data, str):
        data = json.dumps(data, separators=(",", ":"))
    return f"{head}event: {type}\ndata: {data}\n\n".encode()


class _Lagging(Exception):
    """The client left more than the stream's budget of bytes unread: it is dropped."""


class _Stream:
    """What both kinds of stream share: the subscription, drops, heartbeats, errors."""

    def __init__(self, manager: SimulationManager, hub: EventHub, control: StreamControl,
                 max_lag: int) -> None:
        self.manager = manager
        self.registry = manager.rt.registry
        self.hub = hub
        self.control = control
        self.max_lag = max_lag
        self.sub: Subscription | None = None

    def open(self) -> None:
        """Subscribe (before the answer starts, so a refusal is an HTTP error).

        Raises:
            TooManyStreams.
        """
        self.sub = self._subscribe()

    def close(self) -> None:
        if self.sub is not None:
            self.hub.unsubscribe(self.sub)

    def _subscribe(self) -> Subscription:
        raise NotImplementedError

    def _replay(self) -> Iterator[bytes]:
        """Yield what the client missed; return True if the stream is over."""
        raise NotImplementedError

    def _live(self, event: Event) -> Iterator[bytes]:
        """Yield ``event`` if the client wants it; return True if the stream is over."""
        raise NotImplementedError

    def _position(self) -> str:
        raise NotImplementedError

    def _check_lag(self) -> None:
        """Before each event or piece of log read from a file (a catch-up may hold
        megabytes), so a client that reads nothing is never sent more than its budget.

        Raises:
            _Lagging: past the budget; the position is that of the last piece sent.
        """
        if self.control.unsent() > self.max_lag:
            raise _Lagging(f"more than {self.max_lag} bytes sent to it were not yet read")

    def __iter__(self) -> Iterator[bytes]:
        if self.sub is None:
            self.open()
        sub = self.sub
        try:
            yield RETRY
            if (yield from self._replay()):
                return
            quiet_since = time.monotonic()
            while not sub.closed and not self.control.disconnected():
                events = sub.take(_WAKE)
                if sub.dropped:
                    yield sse("dropped", {"reason": sub.dropped, "last_event_id": self._position()})
                    return
                if events:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= HEARTBEAT:
                    quiet_since = time.monotonic()
                    yield KEEPALIVE
                for event in events:
                    # Checked before every event, not once a batch: a batch may hold
                    # megabytes of log lines and the end itself.
                    self._check_lag()
                    if (yield from self._live(event)):
                        return
        except _Lagging as exc:
            sub.drop(str(exc))
            yield sse("dropped", {"reason": sub.dropped, "last_event_id": self._position()})
        except (BackendError, StorageError) as exc:
            logger.warning("event stream ended: %s", exc)
            yield sse("error", {"code": getattr(exc, "code", "storage_error"), "message": str(exc),
                                "last_event_id": self._position()})
        finally:
            self.close()


class SimulationStream(_Stream):
    """``GET /v1/simulations/<id>/events``: state changes, status ticks, log lines, end."""

    def __init__(self, manager: SimulationManager, hub: EventHub, sim_id: str, cursor: Cursor,
                 *, logs: bool, status: bool, control: StreamControl, max_lag: int) -> None:
        super().__init__(manager, hub, control, max_lag)
        self.sim_id = sim_id
        self.cursor = cursor
        self.logs = logs
        self.status = status

    def _subscribe(self) -> Subscription:
        return self.hub.subscribe(self.sim_id, logs=self.logs, status=self.status)

    def _position(self) -> str:
        return self.cursor.format()

    def _replay(self) -> Iterator[bytes]:
        while True:
            page = self.registry.events(self.cursor.event, self.sim_id, _PAGE)
            for stored in page:
                if stored.type == "end":
                    return (yield from self._end(Event.stored(stored)))
                yield self._persisted(Event.stored(stored))
            if len(page) < _PAGE:
                break
        record = self.manager.record(self.sim_id)
        ended = self.registry.has_event(self.sim_id, "end")
        if record["logs_uploaded"] and not ended:
            # Ended before events were kept: its end is told from the record, unnumbered.
            return (yield from self._end(Event("end", self.sim_id, end_data(record))))
        if self._over(record["state"], ended):
            # Its end was behind the cursor already: what is left of the logs, and the
            # stream is over (reconnecting then is answered 204: see told_all).
            if self.logs:
                yield from self._catch_up(final=True)
            return True
        if self.logs:
            yield from self._catch_up(final=False)
        if self.status:
            yield from self._status_now()
        return False

    def _status_now(self) -> Iterator[bytes]:
        """Where a live run is, once the replay is done: a follower that came after its
        first step need not wait for the next tick."""
        event = status_event(self.manager.get(self.sim_id))
        if event is not None:
            yield sse(event.type, event.payload)

    def told_all(self) -> bool:
        """Whether the client has had everything this stream would ever send: its run is
        over (:meth:`_over`) and, with logs, the cursor is at the end of every log file.
        The request is then answered 204 No Content, which tells an EventSource to stop
        reconnecting (the SSE standard): a stream would only send heartbeats."""
        if not self._over(self.manager.get(self.sim_id).snapshot["state"],
                          self.registry.has_event(self.sim_id, "end")):
            return False
        if not self.logs:
            return True
        try:
            files = self.manager.list_files(self.sim_id, LOGS_DIR)
        except StorageError:
            return False  # the stream says so, as for any client
        return all(int(f["size"]) <= self.cursor.logs.get(str(f["name"]), 0) for f in files)

    def _over(self, state: str, ended: bool) -> bool:
        """Given the run's ``state`` and whether its ``end`` is saved: both final
        (neither is saved twice, and no other event is numbered, so no event of it is
        ever saved again), and the cursor past its last event."""
        return ended and SimState(state).is_terminal \
            and self.registry.last_event_id(self.sim_id) <= self.cursor.event

    def _live(self, event: Event) -> Iterator[bytes]:
        if event.type == "log":
            yield from self._log(event)
        elif event.id is not None:
            if event.id <= self.cursor.event:
                return False  # replayed already
            if event.type == "end":
                return (yield from self._end(event))
            yield self._persisted(event)
        else:
            yield sse(event.type, event.payload)
            return event.type == "deleted"
        return False

    def _persisted(self, event: Event) -> bytes:
        self.cursor.event = event.id
        return sse(event.type, event.payload, self.cursor.format())

    def _end(self, event: Event) -> Iterator[bytes]:
        """The last log lines, then the end."""
        if self.logs:
            yield from self._catch_up(final=True)
        if event.id is not None:
            self.cursor.event = event.id
        yield sse("end", event.payload, self.cursor.format())
        return True

    def _catch_up(self, final: bool) -> Iterator[bytes]:
        """Log bytes from the cursor to the end of every file (whole lines unless final)."""
        for entry in self.manager.list_files(self.sim_id, LOGS_DIR):
            name = str(entry["name"])
            if int(entry["size"]) > self.cursor.logs.get(name, 0):
                for offset, data in read_from(self.manager, self.sim_id, name,
                                              self.cursor.logs.get(name, 0), final):
                    self._check_lag()
                    yield self._log_bytes(name, offset, data)

    def _log(self, event: Event) -> Iterator[bytes]:
        """A live log event, cut to what the cursor has not passed; a gap before it (bytes
        written before the pump looked) is read from the file first."""
        name, offset, data = event.data["file"], event.data["offset"], event.raw
        at = self.cursor.logs.get(name, 0)
        if offset + len(data) <= at:
            return
        if offset == at:  # the usual case: the event as every stream sends it
            self.cursor.logs[name] = offset + len(data)
            yield sse("log", event.payload, self.cursor.format())
            return
        if offset > at:
            gap = b"".join(d for _, d in read_from(self.manager, self.sim_id, name, at, True,
                                                    offset - at))
            offset, data = at, gap + data
        data = data[at - offset:]
        for piece_at, piece in chunks(at, data):
            self._check_lag()
            yield self._log_bytes(name, piece_at, piece)

    def _log_bytes(self, name: str, offset: int, data: bytes) -> bytes:
        self.cursor.logs[name] = offset + len(data)
        return sse("log", {"sim_id": self.sim_id, "file": name, "offset": offset,
                           "text": data.decode("utf-8", "replace")}, self.cursor.format())


class AllStream(_Stream):
    """``GET /v1/events``: the state changes, ends and status ticks of every simulation the
    caller may see (no log lines), numbered by the registry's event ids."""

    def __init__(self, manager: SimulationManager, hub: EventHub, after: int,
                 visible: Visible, *, status: bool, control: StreamControl,
                 max_lag: int) -> None:
        super().__init__(manager, hub, control, max_lag)
        self.after = after
        self.visible = visible
        self.status = status

    def _subscribe(self) -> Subscription:
        return self.hub.subscribe(None, status=self.status)

    def _position(self) -> str:
        return str(self.after)

    def _replay(self) -> Iterator[bytes]:
        yield from self._saved()
        if self.status:
            yield from self._statuses_now()
        return False

    def _saved(self) -> Iterator[bytes]:
        """The saved events after the position the client may see, in order."""
        while True:
            page = self.registry.events(self.after, None, _PAGE)
            for stored in page:
                event = Event.stored(stored)
                if self._may_see(event):
                    yield sse(stored.type, event.payload, str(stored.id))
                self.after = stored.id
            if len(page) < _PAGE:
                return

    def _statuses_now(self) -> Iterator[bytes]:
        """Where each live run the client may see is, once the replay is done (as a
        stream of one run opens): a dashboard that opens its stream while runs go on
        need not wait for the next tick to show them."""
        for sup in self.manager.running():
            event = status_event(sup)
            if event is not None and self._may_see(event):
                yield sse(event.type, event.payload)

    def _live(self, event: Event) -> Iterator[bytes]:
        if event.id is not None and event.id > self.after + 1:
            # Simulations publish on threads of their own: an event numbered before this
            # one may not have been published yet. The registry has it: send it first.
            yield from self._saved()
        if event.id is not None and event.id <= self.after:
            return False
        if self._may_see(event):
            if event.id is not None:
                self.after = event.id
            yield sse(event.type, event.payload, None if event.id is None else str(event.id))
        return False

    def _may_see(self, event: Event) -> bool:
        record = event.record
        if record is None:
            try:
                record = self.manager.record(event.sim_id)
            except BackendError:
                return False  # deleted since
        return self.visible(record)

