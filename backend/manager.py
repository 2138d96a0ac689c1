"""The simulation manager: creates, finds, drives and removes simulations.

Resources call exactly one method here per request. Work that takes time
happens on each simulation's supervisor, never on the request thread.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from backend import run_files
from backend.access import QueueRoles
from backend.events import Event
from backend.exceptions import (
    DuplicateSimulation, InvalidRequest, NotFound, NotQueued, SimulationBusy,
    SimulationNotFound,
)
from backend.experiments import ExperimentStore
from backend.mailbox import MailboxTimeout
from backend.queue import Capacity, Demand, Scheduler, resolve_demand
from backend.recovery import recover_all
from backend.registry import SimulationRecord
from backend.schemas import NewSimulation
from backend.services import Runtime
from backend.supervisor import SimulationSupervisor
from lifecycle import SimState
from lifecycle.messages import RESULTS_DIR

logger = logging.getLogger(__name__)

#: How long a request waits for its change to be persisted by the simulation's worker
#: (which never blocks long while a simulation runs).
_PERSIST_WAIT = 30.0
#: A request waiting for a run's end looks this often whether the backend is stopping.
_WAIT_SLICE = 0.5
_LAUNCHING = (SimState.INITIALIZED, SimState.STARTED)
_WAITING = (SimState.CREATED, SimState.QUEUED)


class SimulationManager:
    """The registry of live :class:`SimulationSupervisor` objects, one per simulation."""

    def __init__(self, runtime: Runtime, experiments: ExperimentStore) -> None:
        self.rt = runtime
        self.experiments = experiments
        self._sims: dict[str, SimulationSupervisor] = {}
        self._lock = threading.Lock()
        #: Set when the backend stops: requests waiting for an end are answered at once.
        self.stopping = threading.Event()
        # Admission: launching waits for capacity (see backend.queue).
        capacity = Capacity.of_host(runtime.config, runtime.launcher.reserved_memory_mb())
        self.scheduler = Scheduler(runtime.registry, capacity, self._sims.get, QueueRoles())
        runtime.slot_freed = self.scheduler.wake

    def load(self) -> None:
        """Load every record; re-adopt, reconcile or relaunch the ones that were
        running; clean up what no record owns; take the queue back, in its order."""
        for record in self.rt.registry.load_all():
            self._sims[record.id] = SimulationSupervisor(record, self.rt)
        recover_all(self.rt, self._sims.values())
        self.scheduler.load(self._sims.values())
        self.scheduler.start()

    def running(self) -> list[SimulationSupervisor]:
        """Supervisors whose simulation server is alive."""
        with self._lock:
            sims = list(self._sims.values())
        return [s for s in sims if s.server is not None and not s.server.exited.is_set()]

    # -- queries ------------------------------------------------------------------

    def get(self, sim_id: str) -> SimulationSupervisor:
        """Raises: SimulationNotFound."""
        try:
            return self._sims[sim_id]
        except KeyError:
            raise SimulationNotFound(f"no simulation with id {sim_id!r}") from None

    def record(self, sim_id: str) -> dict[str, Any]:
        """The record, with ``queue`` (``{"position", "reason"}`` while queued, else None)."""
        snapshot = self.get(sim_id).snapshot
        queued = self.scheduler.positions() if snapshot["state"] == SimState.QUEUED else {}
        return {**snapshot, "queue": queued.get(sim_id)}

    def list(self, state: SimState | None = None, experiment: str | None = None,
             owner: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            sims = list(self._sims.values())
        queued = self.scheduler.positions()
        return [{**s.snapshot, "queue": queued.get(s.sim_id)} for s in sims
                if (state is None or s.state == state)
                and (experiment is None or s.snapshot["experiment"] == experiment)
                and (owner is None or s.snapshot.get("owner") == owner)]

    def last_event_id(self) -> int:
        """The id of the newest saved event (0 if none): where to follow ``/v1/events``
        from so as to miss nothing that happened after a listing."""
        return self.rt.registry.last_event_id()

    # -- commands -----------------------------------------------------------------

    def create(self, new: NewSimulation, identity: Any = None,
               requested_by: str | None = None) -> dict[str, Any]:
        """Create a simulation, optionally moving it on at once (or queueing it);
        return its record. ``requested_by`` (who asked) goes into its state events.

        Raises:
            ExperimentNotFound; InvalidRequest: the main script is not in the experiment;
            InvalidExperiment: its ``resources`` are malformed; DuplicateSimulation: the
            client-chosen id is taken; Forbidden: a priority above 0 is not the caller's
            to give; ExceedsHost: it asks to start and could never fit.
        """
        main_script, kernel, config = self._script_of(new)
        demand = resolve_demand(new.resources, config, new.limits, self.rt.config)
        self.scheduler.check_priority(new.priority, identity)
        if new.state is not None:
            self.scheduler.check_fits(demand)
        sup = self._insert(new, main_script, kernel, demand)
        sup.expected = config if new.experiment is not None else None
        sup.created(requested_by)
        if new.state is not None:
            self.scheduler.submit(sup, new.state, requested_by=requested_by)
        sup.wait_saved(_PERSIST_WAIT)
        return self.record(sup.sim_id)

    def _script_of(self, new: NewSimulation) -> tuple[str, str | None, dict[str, Any]]:
        """The run's main script, kernel session and experiment config: an experiment
        whose ``experiment.json`` has ``"nest_session"`` and no script is a NEST session
        too; a session's threads are what it reserves.

        Raises:
            ExperimentNotFound; InvalidRequest: the main script is not in the experiment.
        """
        if new.experiment is None:
            threads = (new.nest or {}).get("threads", 1)
            return "", new.kernel, {"resources": {"threads": threads}}
        # One look at storage for the current version; its files from this backend's
        # copy of it where there is one (on S3, two round trips fewer per run).
        version, prefix = self.experiments.resolve(new.experiment)
        config = self.experiments.config(new.experiment, prefix, version)
        main_script = new.main_script or config.get("main_script")
        if main_script is None and "nest_session" in config:
            return "", "nest", config
        if not self.experiments.has_file(new.experiment, main_script, prefix, version):
            raise InvalidRequest(f"main_script {main_script!r} is not in experiment "
                                 f"{new.experiment!r}", code="invalid_main_script")
        return main_script, None, config

    def _insert(self, new: NewSimulation, main_script: str, kernel: str | None,
                demand: Demand) -> SimulationSupervisor:
        with self._lock:
            sim_id = new.id or self._new_id()
            if sim_id in self._sims:
                raise DuplicateSimulation(f"a simulation with id {sim_id!r} exists")
            record = SimulationRecord(id=sim_id, experiment=new.experiment,
                                      main_script=main_script, params=new.params,
                                      timeout=new.timeout, limits=new.limits,
                                      owner=new.owner, priority=new.priority,
                                      threads=demand.threads, memory_mb=demand.memory_mb,
                                      kernel=kernel, nest=new.nest if kernel else None)
            self.rt.registry.insert(record)
            sup = self._sims[sim_id] = SimulationSupervisor(record, self.rt)
        logger.info("created: sim %s (%s)", sim_id, f"experiment {record.experiment}"
                    if record.experiment else "NEST session")
        return sup

    def set_state(self, sim_id: str, target: SimState,
                  requested_by: str | None = None) -> SimState:
        """Accept an operator's state request; the work follows on the supervisor.

        Answers once the new state is persisted. Launching beyond the host's capacity
        queues the run (the answer is ``queued``); asking a queued run for
        ``initialized`` or ``started`` changes what it will be admitted to.
        ``requested_by`` (who asked) goes into the state events.

        Raises:
            SimulationNotFound, UnknownState, InvalidTransition, ExceedsHost.
        """
        sup = self.get(sim_id)
        if target in _LAUNCHING and sup.state in _WAITING:
            state = self.scheduler.submit(sup, target, requested_by=requested_by)
        else:
            state = sup.lifecycle.request(target, requested_by=requested_by)
        sup.wait_saved(_PERSIST_WAIT)
        return state

    # -- the queue --------------------------------------------------------------------

    def queue(self) -> dict[str, Any]:
        """``GET /v1/queue``: the queued runs in order with why each waits, the runs
        holding a slot, the host's capacity and what is free."""
        return self.scheduler.view()

    def queue_entry(self, sim_id: str) -> dict[str, Any]:
        """Raises: SimulationNotFound, NotQueued."""
        self.get(sim_id)
        return self.scheduler.entry(sim_id)

    def change_queued(self, sim_id: str, position: int | None = None,
                      priority: int | None = None, identity: Any = None) -> dict[str, Any]:
        """Move a queued run and/or give it a new priority; return its entry.

        Raises:
            SimulationNotFound, NotQueued, Forbidden.
        """
        self.get(sim_id)
        return self.scheduler.change(sim_id, position=position, priority=priority,
                                     identity=identity)

    def cancel_queued(self, sim_id: str, requested_by: str | None = None) -> None:
        """Take a run out of the queue: it is stopped.

        Raises:
            SimulationNotFound, NotQueued.
        """
        sup = self.get(sim_id)
        with sup.lifecycle.lock:
            if sup.state != SimState.QUEUED:
                raise NotQueued(f"simulation {sim_id} is not queued (it is {sup.state})")
            sup.lifecycle.request(SimState.STOPPED, requested_by=requested_by)
        sup.wait_saved(_PERSIST_WAIT)

    def wait_ended(self, sim_id: str, timeout: float) -> dict[str, Any]:
        """The record once the simulation has ended, with its ``results`` listed; or,
        after ``timeout`` s or once the backend is stopping, the record as it stands
        (without ``results``)."""
        sup = self.get(sim_id)
        deadline = time.monotonic() + timeout
        while not sup.ended.wait(min(_WAIT_SLICE, max(0.0, deadline - time.monotonic()))):
            if self.stopping.is_set() or time.monotonic() >= deadline:
                return sup.snapshot
        return {**sup.snapshot, "results": self.list_files(sim_id, RESULTS_DIR)}

    def delete(self, sim_id: str) -> None:
        """Remove a finished simulation, its stored logs and results.

        Raises:
            NotTerminal; SimulationBusy: its upload or wind-up is still going on;
            StorageError: its stored copy could not be deleted (nothing was).
        """
        sup = self.get(sim_id)
        try:
            sup.mailbox.call(sup.delete, timeout=_PERSIST_WAIT)
        except MailboxTimeout:
            raise SimulationBusy(f"simulation {sim_id} is still being wound up") from None
        with self._lock:
            self._sims.pop(sim_id, None)
        self.rt.events.publish(Event("deleted", sim_id, {}, record=sup.snapshot))
        logger.info("deleted: sim %s", sim_id)

    def find(self, sim_id: str) -> SimulationSupervisor | None:
        return self._sims.get(sim_id)

    def _new_id(self) -> str:
        while True:
            sim_id = uuid.uuid4().hex[:12]
            if sim_id not in self._sims:
                return sim_id

    # -- logs and results -----------------------------------------------------------

    def list_files(self, sim_id: str, kind: str) -> list[dict[str, Any]]:
        """The files of ``logs`` or ``results``: from the run dir while it exists,
        from storage once uploaded."""
        sup = self.get(sim_id)
        if not sup.snapshot["logs_uploaded"] and sup.run_dir.is_dir():
            return run_files.list_local(sup.run_dir / kind, self.rt.config.max_result_files)
        return run_files.list_stored(self.rt.storage, sim_id, kind)

    def open_file(self, sim_id: str, kind: str, name: str, offset: int = 0,
                  limit: int | None = None) -> tuple[run_files.OpenFile, str]:
        """``[offset, offset + limit)`` of a log or result file, opened, and its name.

        Raises:
            InvalidName: a bad name; NotFound: no such regular file.
        """
        sup = self.get(sim_id)
        name = run_files.checked_name(name)
        if not sup.snapshot["logs_uploaded"]:
            try:
                return run_files.open_local(sup.run_dir / kind, name, offset, limit), name
            except FileNotFoundError:
                if not sup.snapshot["logs_uploaded"]:  # else: uploaded meanwhile
                    raise NotFound(f"simulation {sim_id} has no {kind} file {name!r}") from None
        return run_files.open_stored(self.rt.storage, sim_id, kind, name, offset, limit), name
