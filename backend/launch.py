"""Launching one simulation: fetch the experiment, write ``run.json``, spawn the
server through the launcher, wait until its control API listens and it is built.

It runs on a thread of its own so the simulation's mailbox stays free for
requests meanwhile; every step it takes is reported to the supervisor's mailbox.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

from backend.exceptions import ExperimentNotFound
from backend.launchers import LaunchSpec, ServerHandle
from backend.limits import Limits, resolve
from lifecycle import SimState
from lifecycle.errors import InvalidExperiment
from lifecycle.experiment import EXPERIMENT_FILE, read_experiment
from lifecycle.messages import (
    EXPERIMENT_DIR, LOGS_DIR, RESULTS_DIR, RUN_CONFIG_FILE, RunConfig, ServerInfo, token_digest,
)
from storage import StorageError, write_json_atomic

if TYPE_CHECKING:
    from backend.supervisor import SimulationSupervisor

logger = logging.getLogger(__name__)

# How often the launch looks for server.json: a warm server writes it a few ms after
# it is handed the run, and every poll interval lost is start-up latency; a cold one
# takes a few hundred ms to import, and polling it every 2 ms cost more CPU than all the
# rest of the launch (~20 ms a run), so the interval grows to _POLL_MAX.
_POLL = 0.002
_POLL_MAX = 0.01
#: What a NEST session's record settings become in its ``experiment.json``.
#: Seconds a launch waits for a "started" to be saved before the server may start by
#: itself; a slower save (an outage) lets the start come as a command.
_START_SAVE_WAIT = 2.0
_SESSION_KEYS = ("threads", "seed", "resolution", "exec")


def session_experiment(settings: dict[str, Any]) -> dict[str, Any]:
    """The ``experiment.json`` of a NEST session created without an experiment: the
    simulation server serves a kernel built from these settings (see
    ``simserver.nest_session.open_session``)."""
    return {"description": "NEST session (the NEST Server API under .../nest/)",
            "nest_session": {k: settings[k] for k in _SESSION_KEYS if k in settings}}


class Launch(threading.Thread):
    """One launch of a simulation server for ``sup``."""

    def __init__(self, sup: SimulationSupervisor) -> None:
        super().__init__(name=f"launch-{sup.sim_id}", daemon=True)
        self.sup = sup
        self.rt = sup.rt
        self.run_dir = sup.run_dir
        self.limits: Limits | None = None
        #: The version of the experiment fetched (None: none was).
        self.version: str | None = None
        self._reserved = False
        self._on_record = threading.Event()  # the version and limits are saved

    def run(self) -> None:
        try:
            self._launch()
        except Exception as exc:
            logger.exception("sim %s: launch failed", self.sup.sim_id)
            self._fail({"type": "backend_error", "message": f"launch failed: {exc}"})
        finally:
            self._release()
            self.rt.launcher.launched(self.sup.sim_id)
            self.sup.mailbox.post(self.sup.launch_ended)

    def _fail(self, error: dict[str, Any]) -> None:
        self._release()  # first: what was set aside leaves the run's boundary before its end
        self.sup.mailbox.post(self.sup.fail, error)

    def _stopped(self) -> bool:
        return self.sup.stop_requested.is_set()

    def _launch(self) -> None:
        record = self.sup.snapshot
        if self._stopped():
            return
        self._reserve(record)
        if not self._prepare(record):
            return
        token = secrets.token_urlsafe(32)
        limits = self.limits = self._write_run_config(record, token)
        if not self._on_record.wait(_START_SAVE_WAIT):
            logger.warning("sim %s: its limits were not saved within %g s; starting all the "
                           "same", self.sup.sim_id, _START_SAVE_WAIT)
        if self._stopped():
            return
        deadline = time.monotonic() + limits.start_timeout
        handle = self.rt.launcher.spawn(
            LaunchSpec(self.sup.sim_id, self.run_dir, token, limits.to_dict()),
            on_exit=self.sup.exit_callback)
        self.sup.mailbox.post(self.sup.spawned, handle, limits)
        listening = self._wait_listening(handle, token, deadline)
        if listening is None:
            return
        info, deadline = listening
        self.sup.mailbox.post(self.sup.listening, info)
        while not self.sup.ready.wait(0.05):
            if self._stopped() or handle.exited.is_set():
                return
            if time.monotonic() > deadline:
                self._start_timed_out()
                return

    def _reserve(self, record: dict[str, Any]) -> None:
        """Let the launcher get ready for this run while its files are fetched (a warm
        server set aside and moved into the run's boundary), from the
        ``experiment.json`` it was created with; nothing for a relaunch after a restart
        (what was expected then may be out of date)."""
        expected, self.sup.expected = self.sup.expected, None
        if record["experiment"] is None:
            expected = session_experiment(record.get("nest") or {})
        if expected is not None:
            self._reserved = True
            self.rt.launcher.reserve(self.sup.sim_id, expected)

    def _release(self) -> None:
        """Give back what was reserved for a spawn that did not come (idempotent; after
        a spawn there is nothing left to give back)."""
        if self._reserved:
            self._reserved = False
            self.rt.launcher.release(self.sup.sim_id)

    def _prepare(self, record: dict[str, Any]) -> bool:
        """Fill the run dir's ``experiment/``: fetched, or the built-in session experiment
        of a NEST session that has none; False after failing the simulation."""
        for sub in (EXPERIMENT_DIR, LOGS_DIR, RESULTS_DIR):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        if record["experiment"] is None:
            write_json_atomic(self.run_dir / EXPERIMENT_DIR / EXPERIMENT_FILE,
                              session_experiment(record.get("nest") or {}))
            return True
        return self._fetch(record["experiment"])

    def _fetch(self, experiment: str) -> bool:
        try:
            # The lease keeps this version in storage while it is fetched, so a replace
            # racing the launch gives the run one whole version, old or new.
            version, files = self.rt.experiments.fetch(experiment,
                                                       self.run_dir / EXPERIMENT_DIR)
            logger.info("sim %s: fetched experiment %s version %s", self.sup.sim_id,
                        experiment, version)
            self.version = version
        except ExperimentNotFound:
            files = 0
        except StorageError as exc:
            self._fail({"type": "storage_error",
                        "message": f"could not fetch experiment {experiment!r}: {exc}"})
            return False
        if not files:
            self._fail({"type": "experiment_not_found",
                        "message": f"experiment {experiment!r} is not in storage"})
            return False
        return True

    def _started_on_record(self) -> bool:
        """Whether the server may start by itself (``run.json`` ``"start"``), a round
        trip sooner than the start command: the run is started and that is saved.

        A ``POST`` with ``"state": "started"`` is saved while the experiment is fetched,
        so this waits (briefly) for the save, not only reads the record as it was when
        the launch began. A change the server must not act on before it is on record
        (see ``SimulationSupervisor.converge``) comes as a command otherwise.
        """
        # Under the lifecycle's lock: a request runs all its transitions under it, and this
        # launch begins at the first of them (created -> initialized), so on a busy host
        # it could get here before the second (-> started) and read "initialized".
        with self.sup.lifecycle.lock:
            if self.sup.state != SimState.STARTED:
                return False
        return self.sup.wait_saved(_START_SAVE_WAIT) and \
            self.sup.snapshot["state"] == SimState.STARTED.value

    def _write_run_config(self, record: dict[str, Any], token: str) -> Limits:
        """Resolve the limits and tell the simulation server what to run."""
        try:
            config = read_experiment(self.run_dir / EXPERIMENT_DIR)
        except InvalidExperiment:
            config = {}  # the simulation server reports what is wrong with it
        limits = resolve(self.rt.config, config, record["timeout"], record["limits"])
        # On record before the server starts (waited for in _launch), while run.json is
        # written.
        self.sup.mailbox.post(self._save_launch, limits)
        timeout = dict(record["timeout"])
        if limits.real_time is not None:
            timeout["real_time"] = limits.real_time
        run = RunConfig(sim_id=self.sup.sim_id, experiment=record["experiment"],
                        main_script=record["main_script"], params=record["params"],
                        timeout=timeout, limits=limits.to_dict(),
                        host=self.rt.launcher.bind_host, token_sha256=token_digest(token),
                        start=self._started_on_record())
        # Not synced: only live processes read it (the server, a backend adopting it);
        # a crash of the machine leaves none (backend.recovery relaunches or ends it).
        write_json_atomic(self.run_dir / RUN_CONFIG_FILE, run.to_dict(), durable=False)
        return limits

    def _save_launch(self, limits: Limits) -> None:
        """Put the version fetched and the limits resolved on record (on the mailbox)."""
        try:
            self.sup.keeper.launching(self.version, limits.to_dict())
        finally:
            self._on_record.set()

    def _wait_listening(self, handle: ServerHandle, token: str,
                        deadline: float) -> tuple[ServerInfo, float] | None:
        """Poll for the server's address; None if it died, a stop came, or time ran out.

        Time spent in a batch queue does not count: the start timeout runs from when
        the server leaves it, so the deadline moves; it is returned with the address."""
        poll = _POLL
        while True:
            info = self.rt.launcher.server_info(self.run_dir)
            if info is not None and info.token == token:
                return info, deadline
            poll = min(poll * 1.25, _POLL_MAX)
            if handle.exited.wait(poll) or self._stopped():
                return None
            if handle.queued():
                deadline = time.monotonic() + self.limits.start_timeout
            elif time.monotonic() > deadline:
                self._start_timed_out()
                return None

    def _start_timed_out(self) -> None:
        self._fail({"type": "start_timeout",
                    "message": f"the simulation server was not ready within "
                               f"{self.limits.start_timeout:g} s"})
