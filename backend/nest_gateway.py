"""The NEST Server API of NEST sessions: forwarded to each session's simulation server.

A NEST session is a simulation whose server holds an interactive NEST kernel
(``"kernel": "nest"``). Its NEST Server API (``/``, ``/api``, ``/api/<call>``,
``/exec``) is answered by that server's control API under ``/nest/``; the backend
passes requests and answers through byte for byte, on connections of their own (see
:meth:`backend.control_client.ControlClient.forward`), so a ``Simulate`` lasting
minutes holds up nothing but its own caller.

What the backend adds: the errors of a session that is not there (not one, not
started, ended, unreachable) in the API's JSON shape; a cap on calls that last, so
that worker threads stay free for the rest of the API; and the idle timeout, which
stops a session no request has used for ``idle_timeout`` seconds.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backend.control_client import ControlClient, ControlError, Forwarded
from backend.exceptions import (
    NestCallsBusy, NotNestSession, SessionNotLive, SessionTimeout, SessionUnreachable,
)
from lifecycle import InvalidTransition, SimState

if TYPE_CHECKING:
    from backend.config import Config
    from backend.manager import SimulationManager
    from backend.supervisor import SimulationSupervisor

logger = logging.getLogger(__name__)

#: Calls that last as long as the simulation does (and for ever while paused): they
#: get no answer timeout and count against ``nest_long_calls``.
LONG_CALLS = frozenset({"/api/Simulate", "/api/Run", "/exec"})
#: Seconds any other call may take before the caller gets 504 (the kernel goes on).
CALL_TIMEOUT = 300.0
#: Seconds a call to a session that is still starting waits for it to be ready.
READY_WAIT = 60.0
#: The prefix of the NEST Server API on a simulation server's control API.
SERVER_PREFIX = "/nest"
_POLL = 0.05


@dataclass(frozen=True)
class NestRequest:
    """One request of the NEST Server API, as it came: ``path`` below the API's root
    (``/``, ``/api/Create``), the raw query string and body."""

    method: str
    path: str
    query: str = ""
    body: bytes = b""
    content_type: str | None = None

    @property
    def target(self) -> str:
        """Path and query on the simulation server."""
        path = SERVER_PREFIX + (self.path if self.path.startswith("/") else "/" + self.path)
        return f"{path}?{self.query}" if self.query else path

    @property
    def lasts(self) -> bool:
        return self.path.rstrip("/") in LONG_CALLS


class _Activity:
    """When a session was last asked something, and how many calls it is answering."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.in_flight = 0
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.last = time.monotonic()

    def end(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.last = time.monotonic()

    def idle_for(self) -> float:
        """Seconds without a request in flight (0 while one is)."""
        with self._lock:
            return 0.0 if self.in_flight else time.monotonic() - self.last


class NestGateway:
    """Forwards NEST API calls to sessions and ends the idle ones (its own thread)."""

    def __init__(self, manager: SimulationManager, config: Config) -> None:
        self.manager = manager
        self.idle_timeout = config.nest_idle_timeout
        self._slots = threading.BoundedSemaphore(config.nest_long_calls)
        self.long_calls = config.nest_long_calls
        self._activity: dict[str, _Activity] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch_idle, name="nest-idle", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- forwarding ------------------------------------------------------------------

    def call(self, sim_id: str, request: NestRequest) -> Forwarded:
        """Forward ``request`` to the session ``sim_id``; its answer, unchanged.

        Raises:
            SimulationNotFound; NotNestSession; SessionNotLive: not started, or ended;
            NestCallsBusy: too many lasting calls in flight; SessionUnreachable,
            SessionTimeout.
        """
        sup = self.manager.get(sim_id)
        client = self._client(sup)
        lasts = request.lasts
        if lasts and not self._slots.acquire(blocking=False):
            raise NestCallsBusy(f"{self.long_calls} Simulate, Run or /exec calls are in "
                                "flight (the most at once); try again when one has ended")
        activity = self.activity(sim_id)
        activity.begin()
        try:
            return client.forward(request.method, request.target, request.body,
                                  request.content_type, None if lasts else CALL_TIMEOUT)
        except ControlError as exc:
            if sup.state.is_terminal or not sup.link.alive:
                raise _ended(sup) from None
            if exc.status == 504:
                raise SessionTimeout(f"simulation {sim_id}: {exc} (the call goes on in "
                                     "the session)") from None
            raise SessionUnreachable(f"simulation {sim_id}: {exc}") from None
        finally:
            activity.end()
            if lasts:
                self._slots.release()

    def _client(self, sup: SimulationSupervisor) -> ControlClient:
        """The control client of a live session, once it is ready (waiting a little
        for one that is starting)."""
        if sup.snapshot.get("kernel") != "nest":
            raise NotNestSession(f"simulation {sup.sim_id} is not a NEST session (create "
                                 "one with {\"kernel\": \"nest\"})")
        if sup.state == SimState.CREATED:
            raise SessionNotLive(f"NEST session {sup.sim_id} has not been started: PUT its "
                                 "state 'initialized' or 'started' first",
                                 code="session_not_started")
        deadline = time.monotonic() + READY_WAIT
        while not sup.state.is_terminal:
            client = sup.link.client
            if sup.ready.is_set() and client is not None:
                return client
            if time.monotonic() > deadline:
                raise SessionUnreachable(f"NEST session {sup.sim_id} is still starting",
                                         code="session_starting")
            sup.ready.wait(_POLL)
        raise _ended(sup)

    def activity(self, sim_id: str) -> _Activity:
        with self._lock:
            found = self._activity.get(sim_id)
            if found is None:
                found = self._activity[sim_id] = _Activity()
            return found

    # -- the idle timeout --------------------------------------------------------------

    def _watch_idle(self) -> None:
        while not self._stopped.wait(_idle_interval(self.idle_timeout)):
            try:
                self.stop_idle()
            except Exception:
                logger.exception("nest: checking idle sessions failed")

    def stop_idle(self) -> list[str]:
        """Stop every ready session idle past its timeout; return their ids."""
        live, stopped = set(), []
        for sup in self.manager.running():
            if sup.snapshot.get("kernel") != "nest" or not sup.ready.is_set():
                continue
            live.add(sup.sim_id)
            limit = (sup.snapshot.get("nest") or {}).get("idle_timeout", self.idle_timeout)
            idle = self.activity(sup.sim_id).idle_for()
            if limit and idle > limit and not sup.state.is_terminal:
                self._stop_idle(sup, idle)
                stopped.append(sup.sim_id)
        with self._lock:
            for sim_id in set(self._activity) - live:
                del self._activity[sim_id]
        return stopped

    def _stop_idle(self, sup: SimulationSupervisor, idle: float) -> None:
        logger.info("idle: NEST session %s stopped after %.0f s without a request",
                    sup.sim_id, idle)
        # Posted before the stop: the record says why before it is uploaded.
        sup.mailbox.post(_mark_idle_stopped, sup)
        try:
            self.manager.set_state(sup.sim_id, SimState.STOPPED)
        except InvalidTransition:
            pass  # it ended meanwhile


def _mark_idle_stopped(sup: SimulationSupervisor) -> None:
    """On the simulation's mailbox (the record's one writer)."""
    record = sup.keeper.record
    if not record.state.is_terminal:
        record.nest = {**(record.nest or {}), "idle_stopped": True}
        sup.keeper.save()


def _idle_interval(idle_timeout: float) -> float:
    """How often idle sessions are looked for: often enough for short timeouts."""
    return min(1.0, max(0.05, idle_timeout / 10)) if idle_timeout else 1.0


def _ended(sup: SimulationSupervisor) -> SessionNotLive:
    state: Any = sup.state
    return SessionNotLive(f"NEST session {sup.sim_id} has ended ({state.value})",
                          code="session_ended", state=state.value)
