"""One supervisor per simulation: the work behind its lifecycle.

Operator requests change the lifecycle at once, on the request thread, and post
the work to the supervisor's two :class:`~backend.mailbox.Mailbox` es. ``mailbox``
owns the record: everything that changes it runs there, one call at a time, so the
record has exactly one writer, and request threads read the ``snapshot`` it
publishes. ``commands`` talks to the server: commands, the server's events and the
stop run there, so a request waits for its change to be saved, never for a slow
server. Neither waits long: the launch has a thread of its own
(:mod:`backend.launch`), stop escalation runs on a timer, and the server's exit
arrives as a posted call.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from backend.ending import classify
from backend.events import Event
from backend.exceptions import NotTerminal, SimulationBusy
from backend.launch import Launch
from backend.launchers import Exit, ServerHandle
from backend.limits import Limits
from backend.mailbox import Mailbox
from backend.record_keeper import RecordKeeper
from backend.registry import SimulationRecord
from backend.services import Runtime
from backend.server_link import ServerLink
from backend.status import NO_RESOURCES
from lifecycle import BackendSimulationLifecycle, InvalidTransition, SimState
from lifecycle.messages import ServerInfo

logger = logging.getLogger(__name__)

_BUILDING = threading.Lock()  # guards the lazy construction of lifecycles
_SAVE_WAIT = 30.0


class SimulationSupervisor:
    """Owns one simulation's lifecycle, record, server and run directory."""

    def __init__(self, record: SimulationRecord, runtime: Runtime) -> None:
        self.sim_id = record.id
        self.rt = runtime
        self.run_dir: Path = runtime.config.runs_dir / record.id
        self.mailbox = Mailbox(f"sim-{record.id}", on_error=self._on_error)
        self.commands = Mailbox(f"sim-{record.id}-server", on_error=self._on_error)
        self.keeper = RecordKeeper(record, runtime, self.run_dir, self.mailbox.post)
        self.link = ServerLink(record.id, self.run_dir, runtime.launcher,
                               runtime.config.stop_grace)
        self.limits: Limits | None = None
        #: The ``experiment.json`` it was created with: what its first launch expects
        #: to fetch (a hint to the launcher; the fetch is what counts).
        self.expected: dict[str, Any] | None = None
        self.resources: dict[str, float] = dict(NO_RESOURCES)
        self.stop_requested = threading.Event()
        self.ended = threading.Event()             # the record is in a terminal state
        self._saved = threading.Event()            # the last state change is saved
        self._saved.set()
        self.done = threading.Event()              # wound up: ended and upload tried
        self._launching = self._exit_handled = False
        self.limit_hit = False                     # the watchdog has failed it once
        self._wound_up = False
        self._lifecycle: BackendSimulationLifecycle | None = None
        if record.state.is_terminal:
            self.ended.set()
            self.done.set()

    @property
    def lifecycle(self) -> BackendSimulationLifecycle:
        """The state machine, built on first use: a finished simulation needs none
        (it would cost ~20 kB for each of thousands of records)."""
        machine = self._lifecycle
        if machine is None:
            with _BUILDING:
                if self._lifecycle is None:
                    self._lifecycle = BackendSimulationLifecycle(
                        self.sim_id, self, SimState(self.snapshot["state"]))
                machine = self._lifecycle
        return machine

    @property
    def server(self) -> ServerHandle | None:
        return self.link.server

    @property
    def ready(self) -> threading.Event:
        return self.link.ready

    @property
    def snapshot(self) -> dict[str, Any]:
        """The record as last saved (what request threads read)."""
        return self.keeper.snapshot

    @property
    def state(self) -> SimState:
        machine = self._lifecycle
        return machine.state if machine is not None else SimState(self.snapshot["state"])

    # -- BackendActions: called under the lifecycle lock, never block ---------

    def launch(self) -> None:
        self.mailbox.post(self.begin_launch)

    def start(self) -> None:
        """Nothing here: :meth:`changed` converges the server once the state is saved."""

    resume = pause = start

    def stop(self) -> None:
        self.stop_requested.set()
        self.commands.post(self.link.stop)

    def finish(self, state: SimState, error: dict | None) -> None:
        # The wind-up is posted by changed(), which the lifecycle calls after this: posted
        # here it would run before the terminal state is saved and end with a stale record.
        self.mailbox.post(self.keeper.ended, error)

    def created(self, requested_by: str | None) -> None:
        """Announce the creation (its event), saved before any change that follows, and
        waited for by :meth:`wait_saved` as a change is: a client that lists the
        simulations after its POST was answered gets a ``last_event_id`` that includes it."""
        self._saved = self.mailbox.post_marked(self.keeper.created, requested_by)

    def changed(self, state: SimState, previous: SimState | None = None,
                trigger: str | None = None, requested_by: str | None = None) -> None:
        # Saved first (with its event), so a request can answer once its change is
        # durable without waiting for the server to obey (see wait_saved).
        change = {"previous": previous.value if previous else None, "trigger": trigger,
                  "requested_by": requested_by}
        self._saved = self.mailbox.post_marked(self.keeper.set_state, state, change)
        if state.is_terminal:
            self.mailbox.post(self.ended.set)  # once the record says so
            self.rt.slot_freed()               # the queue admits the next run now
            self.mailbox.post(self.wind_up_if_done)
        else:
            self.commands.post(self.converge, self._saved)
        self.mailbox.post(self.keeper.publish)

    def wait_saved(self, timeout: float) -> bool:
        """Wait until the last state change is saved to the registry."""
        return self._saved.wait(timeout)

    # -- reading, from any thread ------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Live status while the server runs, the last known one after."""
        return self.link.status(self.snapshot)

    # -- launching and attaching (mailbox only) -------------------------------------

    def begin_launch(self) -> None:
        if self.lifecycle.is_terminal or self._launching:
            return
        self._launching = True
        self.done.clear()
        Launch(self).start()

    def exit_callback(self, handle: ServerHandle, exit: Exit) -> None:
        """Given to the launcher: the server's exit, on a thread of the launcher's."""
        self.mailbox.post(self._on_exited, handle, exit)

    def spawned(self, handle: ServerHandle, limits: Limits) -> None:
        self.link.server, self.limits = handle, limits
        if self.stop_requested.is_set() or self.lifecycle.is_terminal:
            self.link.escalate_after(0.0)

    def listening(self, info: ServerInfo) -> None:
        self.link.connect(info, self._deliver)
        if self.stop_requested.is_set():
            self.commands.post(self.link.stop)

    def _deliver(self, event: dict[str, Any]) -> None:
        """A server event, on the thread that follows them: its first step since a start
        or resume goes to the run's followers from here (a status read never holds up
        the mailbox's commands), the rest through the mailbox."""
        if event.get("kind") != "moving":
            self.commands.post(self._on_event, event)
            return
        try:
            self.rt.events.status_now(self)
        except Exception:  # the thread must go on relaying the server's events
            logger.exception("sim %s: telling its first step failed", self.sim_id)

    def launch_ended(self) -> None:
        self._launching = False
        self.wind_up_if_done()

    # -- driving the server (mailbox only) ---------------------------------------------

    def converge(self, saved: threading.Event | None = None) -> None:
        if saved is not None:
            saved.wait(_SAVE_WAIT)  # the change is on record before the server obeys it
        if not self.stop_requested.is_set():
            self.link.converge(self.lifecycle.state)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("state") is None:
            return
        state = SimState(event["state"])
        self.link.at(state, event["seq"])
        self.rt.events.publish(Event("server_state", self.sim_id, {
            "state": state.value, "at": event.get("time")}, record=self.snapshot))
        ending = classify(state, event.get("error"), None,
                          stop_requested=self.stop_requested.is_set())
        if ending.trigger is None:
            self.converge()
            return
        self._system(ending.trigger, error=ending.error)
        self.link.escalate_after(self.rt.config.stop_grace)  # it exits by itself; make sure

    # -- ending (mailbox only) --------------------------------------------------------

    def fail(self, error: dict[str, Any], grace: float | None = None) -> None:
        """Fail the simulation from the backend's side, and end its server."""
        if self.lifecycle.is_terminal:
            return
        logger.warning("sim %s failed: %s", self.sim_id, error["message"])
        self.stop_requested.set()  # no server is wanted any more, launching or not
        self._system("fail", error=error)
        self.link.escalate_after(0.0, grace)

    def _system(self, trigger: str, **kwargs: Any) -> None:
        """Fire a system transition unless the lifecycle is past it already."""
        with self.lifecycle.lock:
            if self.lifecycle.is_terminal:
                return
            try:
                self.lifecycle.fire(trigger, **kwargs)
            except InvalidTransition as exc:
                logger.warning("sim %s: ignored %s: %s", self.sim_id, trigger, exc)

    def _on_exited(self, handle: ServerHandle | None, exit: Exit) -> None:
        """The one place the final state is decided once the server is gone."""
        if handle is not None and self.server not in (None, handle):
            return  # a server of an earlier launch
        self.link.server = self.server or handle
        self._exit_handled = True
        reported, error, tail, problem = self.keeper.exited(exit)
        self.link.state = reported or self.link.state
        ending = classify(reported, error, exit, had_process=self.server is not None,
                          stderr_tail=tail, stop_requested=self.stop_requested.is_set(),
                          status_problem=problem)
        if ending.trigger is not None:
            self._system(ending.trigger, error=ending.error)
        try:
            if self.server is not None:
                self.rt.launcher.kill_leftovers(self.server)
        finally:  # whatever the sweep met, the run is wound up and its logs uploaded
            self.keeper.save()
            self.mailbox.post(self.wind_up_if_done)

    def wind_up_if_done(self) -> None:
        if self._wound_up or self._launching or not self.keeper.record.state.is_terminal or \
                (self.server is not None and not self._exit_handled):
            return
        self._wound_up = True
        self.link.disconnect()
        self.keeper.save()
        self.keeper.announce_end()  # before the upload: clients need not wait for storage
        self.keeper.upload()
        self._lifecycle = None  # terminal is final: rebuilt from the record if ever needed
        self.done.set()

    def delete(self) -> None:
        """Remove the finished simulation: stored copy, run dir, record (mailbox only).

        Raises:
            NotTerminal, SimulationBusy; StorageError: nothing was deleted.
        """
        if not self.state.is_terminal:
            raise NotTerminal(f"simulation {self.sim_id} is {self.state}; stop it first")
        if not self.done.is_set():
            raise SimulationBusy(f"simulation {self.sim_id} is still being wound up")
        self.keeper.delete()

    def _on_error(self, func: Any, exc: Exception) -> None:
        self.fail({"type": "backend_error",
                   "message": f"{getattr(func, '__name__', 'work')} failed: {exc}"})
