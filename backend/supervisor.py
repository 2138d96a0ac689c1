"""One supervisor per simulation: the work behind its lifecycle.

Operator requests change the lifecycle at once (on the request thread) and hand
the work to this supervisor's queue; one worker thread does that work in order
(fetch, spawn, send commands, stop, upload) and is the one path that decides
system transitions: from the simulation server's events and from how its
process exited. A follower thread reads the server's event stream and a reaper
thread waits for the process; both only post to the queue.
"""
from __future__ import annotations

import logging
import queue
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.config import Config
from backend.control_client import ControlClient, ControlError
from backend.errors import ExperimentNotFound
from backend.launcher import Exit, Launcher, ServerProcess
from backend.limits import Limits, resolve
from backend.registry import Registry, SimulationRecord, utc_now
from lifecycle import BackendSimulationLifecycle, InvalidTransition, SimState
from lifecycle.messages import (
    EXPERIMENT_DIR, LOGS_DIR, RESULTS_DIR, RUN_CONFIG_FILE, SERVER_FILE, STATUS_FILE,
    STDERR_LOG, RunConfig, ServerInfo, read_json, token_digest, write_json_atomic,
)
from storage import Storage, StorageError

logger = logging.getLogger(__name__)

# Guards the lazy construction of lifecycles.
_BUILDING = threading.Lock()

_STATUS_KEYS = ("sim_time", "steps", "timestep", "real_time", "timeout")
_STDERR_TAIL_LINES = 20


@dataclass
class Runtime:
    """What every supervisor shares."""

    config: Config
    storage: Storage
    registry: Registry
    launcher: Launcher
    uploader: Any  # backend.uploader.Uploader (it imports this module)
    experiments: Any = None  # backend.experiments.ExperimentStore: resolves versions to fetch


class SimulationSupervisor:
    """Owns one simulation's lifecycle, process and run directory."""

    def __init__(self, record: SimulationRecord, runtime: Runtime) -> None:
        self.record = record
        self.rt = runtime
        self.run_dir: Path = runtime.config.runs_dir / record.id
        self.process: ServerProcess | None = None
        self.client: ControlClient | None = None
        self.server_state: str | None = None
        self.done = threading.Event()       # the worker has finished (upload tried)
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop_requested = threading.Event()
        self._exit_handled = False
        self.limits: Limits | None = None
        self._limit_hit = False
        self._running_since: float | None = None
        self._ran = 0.0                     # seconds started, before _running_since
        self._lifecycle: BackendSimulationLifecycle | None = None
        self._worker_lock = threading.Lock()
        self._save_lock = threading.Lock()
        if self.is_terminal:
            self.done.set()

    @property
    def lifecycle(self) -> BackendSimulationLifecycle:
        """The state machine, built on first use: a finished simulation needs none
        (it would cost ~20 kB for each of thousands of records)."""
        machine = self._lifecycle
        if machine is None:
            with _BUILDING:
                if self._lifecycle is None:
                    self._lifecycle = BackendSimulationLifecycle(self.record.id, self,
                                                                 SimState(self.record.state))
                machine = self._lifecycle
        return machine

    @property
    def is_terminal(self) -> bool:
        return SimState(self.record.state).is_terminal

    @property
    def sim_id(self) -> str:
        return self.record.id

    # -- BackendActions: called under the lifecycle lock, never block ---------

    def launch(self) -> None:
        self._submit("launch")

    def start(self) -> None:
        self._submit("command", "start")

    def resume(self) -> None:
        self._submit("command", "resume")

    def pause(self) -> None:
        self._submit("command", "pause")

    def stop(self) -> None:
        self._stop_requested.set()
        self._submit("stop")

    def finish(self, state: SimState, error: dict | None) -> None:
        self.record.ended_at = utc_now()
        if error is not None:
            self.record.error = error
        # Nothing launched: no process will exit to wake the worker.
        self._submit("noop")

    def changed(self, state: SimState) -> None:
        self.record.state = state.value
        self.save()

    # -- shared helpers --------------------------------------------------------

    def save(self) -> None:
        with self._save_lock:
            self.record.updated_at = utc_now()
            self.rt.registry.save(self.record)

    def status(self) -> dict[str, Any]:
        """Live status while the server runs, the last known one after."""
        client, process = self.client, self.process
        if client is not None and process is not None and not process.exited.is_set():
            try:
                live = client.status(timeout=1.0)
                self.server_state = live.get("state", self.server_state)
                self.record.status = {**{k: live.get(k) for k in _STATUS_KEYS},
                                      "resources": process.resources()}
            except ControlError:
                pass
        status = {"sim_time": 0.0, "steps": 0, "timestep": None, "real_time": 0.0,
                  "timeout": self.record.timeout,
                  "resources": {"cpu_percent": 0.0, "rss_bytes": 0}, **self.record.status}
        return {"state": self.record.state, "server_state": self.server_state, **status}

    def _submit(self, kind: str, arg: Any = None) -> None:
        self._queue.put((kind, arg))
        with self._worker_lock:
            if self._worker is None:
                self.done.clear()
                self._worker = threading.Thread(target=self._work, name=f"sim-{self.sim_id}",
                                                daemon=True)
                self._worker.start()

    # -- the worker ------------------------------------------------------------

    def _work(self) -> None:
        while True:
            kind, arg = self._queue.get()
            try:
                getattr(self, f"_do_{kind}")(arg)
            except Exception as exc:
                logger.exception("sim %s: %s failed", self.sim_id, kind)
                self._fail({"type": "backend_error", "message": f"{kind} failed: {exc}"})
            if self.lifecycle.is_terminal and (self.process is None or self._exit_handled):
                break
        self._finalize()

    def _do_noop(self, _: Any) -> None:
        pass

    def _do_launch(self, _: Any) -> None:
        if self.lifecycle.is_terminal:
            return
        for sub in (EXPERIMENT_DIR, LOGS_DIR, RESULTS_DIR):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        try:
            # The lease keeps this version in storage while it is fetched, so a replace
            # racing the launch gives the run one whole version, old or new.
            with self.rt.experiments.lease(self.record.experiment) as (version, prefix):
                files = self.rt.storage.download_prefix(prefix, self.run_dir / EXPERIMENT_DIR)
            logger.info("sim %s: fetched experiment %s version %s", self.sim_id,
                        self.record.experiment, version)
        except ExperimentNotFound:
            files = []
        except StorageError as exc:
            self._fail({"type": "storage_error",
                        "message": f"could not fetch experiment {self.record.experiment!r}: {exc}"})
            return
        if not files:
            self._fail({"type": "experiment_not_found",
                        "message": f"experiment {self.record.experiment!r} is not in storage"})
            return
        token = secrets.token_urlsafe(32)
        self._write_run_config(token)
        if self._stop_requested.is_set():
            return
        deadline = time.monotonic() + self.limits.start_timeout
        self.process = self.rt.launcher.spawn(self.sim_id, self.run_dir, token,
                                              on_exit=lambda exit: self._submit("exited", exit))
        info = self._wait_for_server(token, deadline)
        if info is None:
            return
        self._attach(info)
        while not self._ready.wait(0.05):
            if self._stop_requested.is_set() or self.process.exited.is_set():
                return
            if time.monotonic() > deadline:
                self._start_timed_out()
                return

    def _load_limits(self) -> None:
        """After re-adoption: the limits the simulation was launched with."""
        data = read_json(self.run_dir / RUN_CONFIG_FILE) or {}
        limits = data.get("limits") or {}
        memory = limits.get("memory_mb")
        self.limits = Limits(real_time=limits.get("real_time"),
                             memory_bytes=None if memory is None else int(memory * 2**20),
                             start_timeout=limits.get("start_timeout") or 0.0)

    def _write_run_config(self, token: str) -> None:
        """Resolve the limits and tell the simulation server what to run."""
        try:
            experiment = read_json(self.run_dir / EXPERIMENT_DIR / "experiment.json")
        except ValueError:
            experiment = None  # the simulation server reports what is wrong with it
        experiment = experiment if isinstance(experiment, dict) else {}
        self.limits = resolve(self.rt.config, experiment, self.record.timeout,
                              self.record.limits)
        timeout = dict(self.record.timeout)
        if self.limits.real_time is not None:
            timeout["real_time"] = self.limits.real_time
        config = RunConfig(sim_id=self.sim_id, experiment=self.record.experiment,
                           main_script=self.record.main_script, params=self.record.params,
                           timeout=timeout, limits=self.limits.to_dict(),
                           token_sha256=token_digest(token))
        write_json_atomic(self.run_dir / RUN_CONFIG_FILE, config.to_dict())

    def _wait_for_server(self, token: str, deadline: float) -> ServerInfo | None:
        """Poll for ``server.json``; None if the process died, a stop came, or time ran out."""
        while True:
            data = read_json(self.run_dir / SERVER_FILE)
            if data and data.get("token") == token:
                return ServerInfo.from_dict(data)
            if self.process.exited.wait(0.01) or self._stop_requested.is_set():
                return None
            if time.monotonic() > deadline:
                self._start_timed_out()
                return None

    def _start_timed_out(self) -> None:
        self._fail({"type": "start_timeout",
                    "message": f"the simulation server was not ready within "
                               f"{self.limits.start_timeout:g} s"})

    def _attach(self, info: ServerInfo) -> None:
        self.client = ControlClient(info)
        threading.Thread(target=self._follow, args=(self.client, self.process),
                         name=f"events-{self.sim_id}", daemon=True).start()

    def _follow(self, client: ControlClient, process: ServerProcess) -> None:
        """Relay the server's events to the worker until the process is gone."""
        seq = 0
        while not process.exited.is_set():
            try:
                events = client.events(seq, wait=20.0)
            except ControlError:
                process.exited.wait(0.1)
                continue
            for event in events:
                seq = event["seq"]
                if event.get("state") != SimState.CREATED.value:
                    self._ready.set()
                self._submit("event", event)
        self._ready.set()

    def _do_command(self, name: str) -> None:
        if self._stop_requested.is_set() or self.client is None:
            return
        try:
            self.server_state = self.client.command(name)["state"]
            self._count_running(self.server_state == SimState.STARTED.value)
        except ControlError as exc:
            # The server may have ended meanwhile; its event or exit decides.
            logger.info("sim %s: command %s not applied: %s", self.sim_id, name, exc)

    def _count_running(self, running: bool) -> None:
        now = time.monotonic()
        if self._running_since is not None:
            self._ran += now - self._running_since
        self._running_since = now if running else None

    def running_time(self) -> float:
        """Seconds this simulation has been started (pauses do not count)."""
        since = self._running_since
        return self._ran + (time.monotonic() - since if since is not None else 0.0)

    def check_limits(self) -> None:
        """Called by the watchdog: fail the simulation once it breaks a limit."""
        process, limits = self.process, self.limits
        if process is None or limits is None or self._limit_hit or process.exited.is_set() \
                or self.lifecycle.is_terminal:
            return
        resources = process.resources()
        self.record.status = {**self.record.status, "resources": resources}
        error = None
        if limits.memory_bytes and resources["rss_bytes"] > limits.memory_bytes:
            error = {"type": "memory_limit", "rss_bytes": resources["rss_bytes"],
                     "limit_bytes": limits.memory_bytes,
                     "message": f"the simulation used {resources['rss_bytes'] / 2**20:.0f} MiB, "
                                f"over its limit of {limits.memory_bytes / 2**20:.0f} MiB"}
        elif limits.real_time and self.running_time() > limits.real_time + self.rt.config.stop_grace:
            error = {"type": "real_time_limit",
                     "message": f"the script did not end within its real-time timeout of "
                                f"{limits.real_time:g} s (it does not call run_loop?)"}
        if error is not None:
            self._limit_hit = True
            self._submit("limit", error)

    def _do_limit(self, error: dict[str, Any]) -> None:
        if not self.lifecycle.is_terminal:
            self._fail(error, grace=min(self.rt.config.stop_grace, 2.0))

    def _do_stop(self, _: Any) -> None:
        process = self.process
        if process is None or process.exited.is_set():
            return
        if self.client is not None:
            try:
                self.server_state = self.client.command("stop", timeout=2.0)["state"]
            except ControlError as exc:
                logger.info("sim %s: graceful stop not delivered: %s", self.sim_id, exc)
            if process.exited.wait(self.rt.config.stop_grace):
                return
        self.rt.launcher.terminate(process, self.rt.config.stop_grace)

    def _verify(self, info: ServerInfo) -> bool:
        """True unless the process refuses our token (then it is not the one we started)."""
        try:
            ControlClient(info).status(timeout=2.0)
        except ControlError as exc:
            if exc.status == 401:
                logger.error("sim %s: pid %d refuses the recorded token; not adopting it",
                             self.sim_id, info.pid)
                return False
        return True

    def _do_reconcile(self, _: Any) -> None:
        """After re-adoption, send what the server missed while the backend was down."""
        if self.client is None:
            return
        try:
            status = self.client.status()
        except ControlError:
            return
        server = self.server_state = status["state"]
        self._ran = float(status.get("real_time") or 0.0)
        self._count_running(server == SimState.STARTED.value)
        self._load_limits()
        wanted = self.record.state
        if wanted == SimState.STARTED.value and server == SimState.INITIALIZED.value:
            self._do_command("start")
        elif wanted == SimState.STARTED.value and server == SimState.PAUSED.value:
            self._do_command("resume")
        elif wanted == SimState.PAUSED.value and server == SimState.STARTED.value:
            self._do_command("pause")

    def _do_event(self, event: dict[str, Any]) -> None:
        state = event.get("state")
        if state is None:
            return
        self.server_state = state
        if state == SimState.FAILED.value:
            self._system("fail", error=event.get("error"))
        elif state == SimState.COMPLETED.value:
            self._system("complete")
        elif state == SimState.STOPPED.value:
            self._system("stop")
        if SimState(state).is_terminal and self.process is not None:
            # The server exits by itself; make sure it does.
            if not self.process.exited.wait(self.rt.config.stop_grace):
                self.rt.launcher.terminate(self.process, self.rt.config.stop_grace)

    def _do_exited(self, exit: Exit) -> None:
        """The one place the final state is decided when the server is gone."""
        self._exit_handled = True
        status = read_json(self.run_dir / STATUS_FILE) or {}
        code = exit.code if exit.signal is None else -exit.signal
        # An adopted process is not our child: the OS does not tell us how it
        # exited, but the server wrote its own exit code down.
        self.record.exit_code = code if code is not None else status.get("exit_code")
        if status:
            self.record.status = {**self.record.status,
                                  **{k: status.get(k) for k in _STATUS_KEYS}}
        reported = status.get("state")
        self.server_state = reported or self.server_state
        if reported == SimState.COMPLETED.value:
            self._system("complete")
        elif reported == SimState.FAILED.value:
            self._system("fail", error=status.get("error"))
        elif reported == SimState.STOPPED.value:
            self._system("stop")
        if not self.lifecycle.is_terminal:
            self._fail(self._crash_error(exit))
        if self.process is not None:
            self.rt.launcher.kill_leftovers(self.process)
        self.save()

    def _crash_error(self, exit: Exit) -> dict[str, Any]:
        if exit.code is None and exit.signal is None and self.process is None:
            message = ("the simulation server is gone: the backend restarted and found no "
                       "live process and no final status")
        else:
            message = f"the simulation server died unexpectedly ({exit.describe()})"
        error = {"type": "crashed", "message": message, "exit_code": exit.code,
                 "signal": exit.signal_name}
        tail = _tail(self.run_dir / LOGS_DIR / STDERR_LOG, _STDERR_TAIL_LINES)
        if tail:
            error["stderr_tail"] = tail
        return error

    def _system(self, trigger: str, **kwargs: Any) -> None:
        """Fire a system transition unless the lifecycle is past it already."""
        with self.lifecycle.lock:
            if self.lifecycle.is_terminal:
                return
            try:
                self.lifecycle.fire(trigger, **kwargs)
            except InvalidTransition as exc:
                logger.warning("sim %s: ignored %s: %s", self.sim_id, trigger, exc)

    def _fail(self, error: dict[str, Any], grace: float | None = None) -> None:
        """Fail the simulation from the backend's side, and end its process."""
        logger.warning("sim %s failed: %s", self.sim_id, error["message"])
        self._system("fail", error=error)
        if self.process is not None and not self.process.exited.is_set():
            self.rt.launcher.terminate(
                self.process, self.rt.config.stop_grace if grace is None else grace)

    def _finalize(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        self.save()
        with self._worker_lock:
            self._worker = None
        self.rt.uploader.upload(self)
        # Terminal is final: the machine can be rebuilt from the record if ever needed.
        self._lifecycle = None
        self.done.set()

    # -- after a backend restart ----------------------------------------------

    def recover(self) -> bool:
        """Re-adopt a live simulation server, or learn how a dead one ended.

        Returns True when the simulation never got as far as a server writing down
        its state (the backend went down while launching it): it is launched anew
        by :meth:`relaunch`, once the caller has cleaned up orphans.
        """
        data = read_json(self.run_dir / SERVER_FILE)
        if data:
            info = ServerInfo.from_dict(data)
            self.process = self.rt.launcher.adopt(
                self.sim_id, info.pid, info.create_time,
                on_exit=lambda exit: self._submit("exited", exit))
            if self.process is not None and not self._verify(info):
                self.process = None
            if self.process is not None:
                self._attach(info)
                self._ready.set()
                if self.lifecycle.is_terminal:
                    self._stop_requested.set()
                    self._submit("stop")
                else:
                    self._submit("reconcile")
                return False
        if not self.lifecycle.is_terminal:
            if read_json(self.run_dir / STATUS_FILE) is None:
                return True
            self._submit("exited", Exit(None, None))
        elif not self.record.logs_uploaded:
            self._submit("noop")
        return False

    def relaunch(self) -> None:
        """Launch again a simulation whose launch a backend restart cut short."""
        logger.info("relaunching: sim %s (its launch was cut short by a restart)", self.sim_id)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.record.status = {}
        self._submit("launch")
        if self.lifecycle.state != SimState.INITIALIZED:
            self._submit("command", "start")
            if self.lifecycle.state == SimState.PAUSED:
                self._submit("command", "pause")


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])

