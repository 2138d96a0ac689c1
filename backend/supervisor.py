"""One supervisor per simulation: the work behind its lifecycle.

Operator requests change the lifecycle at once, on the request thread, and post
the work to the supervisor's :class:`~backend.mailbox.Mailbox`. Everything that
touches the simulation's record, process or control connection runs there, one
call at a time, so the record has exactly one writer; request threads read the
``snapshot`` it publishes. Nothing on the mailbox waits long while the simulation
runs: the launch has a thread of its own (:mod:`backend.launch`), stop escalation
runs on a timer, and the server's events and exit arrive as posted calls.
"""
from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from backend.control_client import ControlClient, ControlError
from backend.ending import classify, exit_code
from backend.exceptions import NotTerminal, SimulationBusy
from backend.launch import Launch
from backend.launchers import Exit, ServerHandle
from backend.limits import Limits
from backend.mailbox import Mailbox
from backend.registry import SimulationRecord, utc_now
from backend.services import Runtime
from backend.uploader import UploadJob, simulation_prefix
from lifecycle import BackendSimulationLifecycle, InvalidTransition, SimState
from lifecycle.clock import RunningTime
from lifecycle.messages import (
    LOGS_DIR, RUN_CONFIG_FILE, STATUS_FILE, STDERR_LOG, ServerInfo, next_command, read_json,
)
from storage import StorageError

logger = logging.getLogger(__name__)

_BUILDING = threading.Lock()  # guards the lazy construction of lifecycles
STATUS_KEYS = ("sim_time", "steps", "timestep", "real_time", "timeout")
_NO_RESOURCES = {"cpu_percent": 0.0, "rss_bytes": 0}


class SimulationSupervisor:
    """Owns one simulation's lifecycle, record, server and run directory."""

    def __init__(self, record: SimulationRecord, runtime: Runtime) -> None:
        self.sim_id = record.id
        self.rt = runtime
        self.run_dir: Path = runtime.config.runs_dir / record.id
        self.mailbox = Mailbox(f"sim-{record.id}", on_error=self._on_error)
        self._record = record                      # written on the mailbox only
        self.snapshot: dict[str, Any] = record.to_dict()
        self.server: ServerHandle | None = None
        self.client: ControlClient | None = None
        self.server_state: SimState | None = None
        self._state_seq = 0                        # event seq server_state stems from
        self.limits: Limits | None = None
        self.resources: dict[str, float] = dict(_NO_RESOURCES)
        self.running = RunningTime()
        self.ready = threading.Event()             # the server has built its kernel
        self.stop_requested = threading.Event()
        self.done = threading.Event()              # wound up: ended and upload tried
        self._launching = self._exit_handled = self._limit_hit = False
        self._wound_up = self._deleted = False
        self._lifecycle: BackendSimulationLifecycle | None = None
        if record.state.is_terminal:
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
    def state(self) -> SimState:
        machine = self._lifecycle
        return machine.state if machine is not None else SimState(self.snapshot["state"])

    # -- BackendActions: called under the lifecycle lock, never block ---------

    def launch(self) -> None:
        self.mailbox.post(self._begin_launch)

    def start(self) -> None:
        self.mailbox.post(self._converge)

    resume = pause = start

    def stop(self) -> None:
        self.stop_requested.set()
        self.mailbox.post(self._stop)

    def finish(self, state: SimState, error: dict | None) -> None:
        self.mailbox.post(self._finished, error)

    def changed(self, state: SimState) -> None:
        self.mailbox.post(self._persist_state, state)

    # -- reading, from any thread ------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Live status while the server runs, the last known one after."""
        snapshot, client, server = self.snapshot, self.client, self.server
        status = {"sim_time": 0.0, "steps": 0, "timestep": None, "real_time": 0.0,
                  "timeout": snapshot["timeout"], "resources": dict(_NO_RESOURCES),
                  **snapshot["status"]}
        server_state = self.server_state.value if self.server_state else None
        if client is not None and server is not None and not server.exited.is_set():
            try:
                live = client.status(timeout=1.0)
                status.update({k: live.get(k) for k in STATUS_KEYS},
                              resources=server.resources())
                server_state = live.get("state", server_state)
            except ControlError:
                pass
        return {"state": snapshot["state"], "server_state": server_state, **status}

    def check_limits(self) -> None:
        """Called by the watchdog: fail the simulation once it breaks a limit."""
        server, limits = self.server, self.limits
        if server is None or limits is None or self._limit_hit or server.exited.is_set() \
                or self.state.is_terminal:
            return
        self.resources = resources = server.resources()
        error = None
        if limits.memory_bytes and resources["rss_bytes"] > limits.memory_bytes:
            error = {"type": "memory_limit", "rss_bytes": resources["rss_bytes"],
                     "limit_bytes": limits.memory_bytes,
                     "message": f"the simulation used {resources['rss_bytes'] / 2**20:.0f} MiB, "
                                f"over its limit of {limits.memory_bytes / 2**20:.0f} MiB"}
        elif limits.real_time and \
                self.running.elapsed() > limits.real_time + self.rt.config.stop_grace:
            error = {"type": "real_time_limit",
                     "message": f"the script did not end within its real-time timeout of "
                                f"{limits.real_time:g} s (it does not call run_loop?)"}
        if error is not None:
            self._limit_hit = True
            self.mailbox.post(self.fail, error, min(self.rt.config.stop_grace, 2.0))

    # -- the record (mailbox only) -------------------------------------------------

    def _save(self) -> None:
        self._record.updated_at = utc_now()
        self.rt.registry.save(self._record)
        self.snapshot = self._record.to_dict()

    def _persist_state(self, state: SimState) -> None:
        self._record.state = state
        self._save()

    def _finished(self, error: dict | None) -> None:
        self._record.ended_at = utc_now()
        if error is not None:
            self._record.error = error
        self._save()
        self.mailbox.post(self._wind_up_if_done)

    # -- launching and attaching (mailbox only) -------------------------------------

    def _begin_launch(self) -> None:
        if self.lifecycle.is_terminal or self._launching:
            return
        self._launching = True
        self.done.clear()
        Launch(self).start()

    def exit_callback(self, handle: ServerHandle, exit: Exit) -> None:
        """Given to the launcher: the server's exit, on a thread of the launcher's."""
        self.mailbox.post(self._on_exited, handle, exit)

    def spawned(self, handle: ServerHandle, limits: Limits) -> None:
        self.server, self.limits = handle, limits
        if self.stop_requested.is_set() or self.lifecycle.is_terminal:
            self._escalate_after(0.0)

    def listening(self, info: ServerInfo) -> None:
        self.client = ControlClient(info)
        threading.Thread(target=self._follow, args=(self.client, self.server),
                         name=f"events-{self.sim_id}", daemon=True).start()
        if self.stop_requested.is_set():
            self._stop()

    def launch_ended(self) -> None:
        self._launching = False
        self._wind_up_if_done()

    def adopt(self, handle: ServerHandle, info: ServerInfo) -> None:
        """After a backend restart: take over a live server, tell it what it missed."""
        self.server = handle
        run = read_json(self.run_dir / RUN_CONFIG_FILE) or {}
        self.limits = Limits.from_dict(run.get("limits") or {}, self.rt.config.start_timeout)
        self.ready.set()
        self.listening(info)
        if self.lifecycle.is_terminal:
            self.stop()
            return
        try:
            status = self.client.status()
        except ControlError:
            return  # its events or its exit will tell
        self.server_state = SimState(status["state"])
        self.running.reset(float(status.get("real_time") or 0.0),
                           self.server_state == SimState.STARTED)
        self._converge()

    def _follow(self, client: ControlClient, server: ServerHandle) -> None:
        """Relay the server's events to the mailbox until it is gone."""
        seq = 0
        while not server.exited.is_set():
            try:
                events = client.events(seq, wait=20.0)
            except ControlError:
                server.exited.wait(0.1)
                continue
            for event in events:
                seq = event["seq"]
                if event.get("state") not in (None, SimState.CREATED):
                    self.ready.set()
                self.mailbox.post(self._on_event, event)

    # -- driving the server (mailbox only) ---------------------------------------------

    def _converge(self) -> None:
        """Send the commands that bring the server to the lifecycle's state."""
        for _ in range(3):
            command = next_command(self.server_state, self.lifecycle.state)
            if command is None or self.client is None or self.stop_requested.is_set():
                return
            try:
                reply = self.client.command(command)
            except ControlError as exc:
                # The server may have ended meanwhile; its event or exit decides.
                logger.info("sim %s: command %s not applied: %s", self.sim_id, command, exc)
                return
            self._server_at(SimState(reply["state"]), reply.get("seq", self._state_seq))

    def _server_at(self, state: SimState, seq: int) -> None:
        if seq < self._state_seq:
            return  # an event older than what a command reply told us
        self.server_state, self._state_seq = state, seq
        if state == SimState.STARTED:
            self.running.run()
        else:
            self.running.hold()

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("state") is None:
            return
        state = SimState(event["state"])
        self._server_at(state, event["seq"])
        ending = classify(state, event.get("error"), None)
        if ending.trigger is None:
            self._converge()
            return
        self._system(ending.trigger, error=ending.error)
        self._escalate_after(self.rt.config.stop_grace)  # it exits by itself; make sure

    def _stop(self) -> None:
        server = self.server
        if server is None or server.exited.is_set():
            return
        if self.client is None:
            self._escalate_after(0.0)
            return
        try:
            self.server_state = SimState(self.client.command("stop", timeout=2.0)["state"])
        except ControlError as exc:
            logger.info("sim %s: graceful stop not delivered: %s", self.sim_id, exc)
        self._escalate_after(self.rt.config.stop_grace)

    def _escalate_after(self, delay: float, grace: float | None = None) -> None:
        """Terminate the server unless it is gone within ``delay`` s (off the mailbox)."""
        server, grace = self.server, self.rt.config.stop_grace if grace is None else grace

        def escalate() -> None:
            if server is not None and not server.exited.wait(delay):
                self.rt.launcher.terminate(server, grace)

        threading.Thread(target=escalate, name=f"stop-{self.sim_id}", daemon=True).start()

    # -- ending (mailbox only) --------------------------------------------------------

    def fail(self, error: dict[str, Any], grace: float | None = None) -> None:
        """Fail the simulation from the backend's side, and end its server."""
        if self.lifecycle.is_terminal:
            return
        logger.warning("sim %s failed: %s", self.sim_id, error["message"])
        self.stop_requested.set()  # no server is wanted any more, launching or not
        self._system("fail", error=error)
        self._escalate_after(0.0, grace)

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
        self.server = self.server or handle
        self._exit_handled = True
        status = read_json(self.run_dir / STATUS_FILE) or {}
        self._record.exit_code = exit_code(exit, status.get("exit_code"))
        self._record.status = {**self._record.status, **{k: status.get(k) for k in STATUS_KEYS
                                                         if k in status}}
        reported = SimState(status["state"]) if status.get("state") else None
        if reported is not None:
            self.server_state = reported
        ending = classify(reported, status.get("error"), exit, had_process=self.server is not None,
                          stderr_tail=_tail(self.run_dir / LOGS_DIR / STDERR_LOG))
        if ending.trigger is not None:
            self._system(ending.trigger, error=ending.error)
        if self.server is not None:
            self.rt.launcher.kill_leftovers(self.server)
        self._save()
        self.mailbox.post(self._wind_up_if_done)

    def _wind_up_if_done(self) -> None:
        if self._wound_up or self._launching or not self.lifecycle.is_terminal or \
                (self.server is not None and not self._exit_handled):
            return
        self._wound_up = True
        if self.client is not None:
            self.client.close()
            self.client = None
        self._save()
        self.upload()
        self._lifecycle = None  # terminal is final: rebuilt from the record if ever needed
        self.done.set()

    def relaunch(self) -> None:
        """Launch again a simulation whose launch a backend restart cut short (mailbox)."""
        logger.info("relaunching: sim %s (its launch was cut short by a restart)", self.sim_id)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._record.status = {}
        self._save()
        self._begin_launch()

    def wind_up(self) -> None:
        """After a restart: finish what a terminal simulation still owes (mailbox)."""
        self.done.clear()
        self._wind_up_if_done()

    def upload(self) -> None:
        """Upload logs and results (retried by the uploader until it works)."""
        if not self._record.logs_uploaded:
            self.rt.uploader.upload(self._upload_job())

    def _upload_job(self) -> UploadJob:
        return UploadJob(self.sim_id, self.run_dir, lambda: dict(self.snapshot),
                         lambda: self.mailbox.post(self._uploaded))

    def _uploaded(self) -> None:
        if self._deleted:
            return
        self._record.logs_uploaded = True
        self._save()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def delete(self) -> None:
        """Remove the finished simulation's stored copy, run dir and record (mailbox only).

        Raises:
            NotTerminal, SimulationBusy; StorageError: nothing was deleted.
        """
        if not self.state.is_terminal:
            raise NotTerminal(f"simulation {self.sim_id} is {self.state}; stop it first")
        if not self.done.is_set():
            raise SimulationBusy(f"simulation {self.sim_id} is still being wound up")
        if not self.rt.uploader.cancel(self.sim_id):
            raise SimulationBusy(f"simulation {self.sim_id}'s upload is being retried right now")
        try:
            self.rt.storage.delete_prefix(simulation_prefix(self.sim_id))
        except StorageError:
            if not self._record.logs_uploaded:
                self.rt.uploader.resume(self._upload_job())  # keep trying to upload it
            raise
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.rt.registry.delete(self.sim_id)
        self._deleted = True

    def _on_error(self, func: Any, exc: Exception) -> None:
        self.fail({"type": "backend_error",
                   "message": f"{getattr(func, '__name__', 'work')} failed: {exc}"})


def _tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
