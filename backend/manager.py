"""The simulation manager: creates, finds, drives and removes simulations.

Resources call exactly one method here per request. Work that takes time
happens on each simulation's supervisor, never on the request thread.
"""
from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, BinaryIO, Iterator

from backend import run_files
from backend.events import Event
from backend.exceptions import (
    CapacityReached, DuplicateSimulation, InvalidRequest, NotFound, SimulationBusy,
    SimulationNotFound,
)
from backend.experiments import ExperimentStore
from backend.mailbox import MailboxTimeout
from backend.recovery import recover_all
from backend.registry import SimulationRecord
from backend.schemas import NewSimulation
from backend.services import Runtime
from backend.supervisor import SimulationSupervisor
from lifecycle import ACTIVE_STATES, SimState
from lifecycle.messages import RESULTS_DIR

logger = logging.getLogger(__name__)

#: How long a request waits for its change to be persisted by the simulation's worker
#: (which never blocks long while a simulation runs).
_PERSIST_WAIT = 5.0
_LAUNCHING = (SimState.INITIALIZED, SimState.STARTED)


class SimulationManager:
    """The registry of live :class:`SimulationSupervisor` objects, one per simulation."""

    def __init__(self, runtime: Runtime, experiments: ExperimentStore) -> None:
        self.rt = runtime
        self.experiments = experiments
        self._sims: dict[str, SimulationSupervisor] = {}
        self._lock = threading.Lock()
        # Counting running simulations and launching one more happen as one step.
        self._admission = threading.Lock()

    def load(self) -> None:
        """Load every record; re-adopt, reconcile or relaunch the ones that were
        running; clean up what no record owns."""
        for record in self.rt.registry.load_all():
            self._sims[record.id] = SimulationSupervisor(record, self.rt)
        recover_all(self.rt, self._sims.values())

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
        return self.get(sim_id).snapshot

    def list(self, state: SimState | None = None,
             experiment: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            sims = list(self._sims.values())
        return [s.snapshot for s in sims
                if (state is None or s.state == state)
                and (experiment is None or s.snapshot["experiment"] == experiment)]

    def count_active(self) -> int:
        with self._lock:
            return sum(1 for s in self._sims.values() if s.state in ACTIVE_STATES)

    # -- commands -----------------------------------------------------------------

    def create(self, new: NewSimulation, requested_by: str | None = None) -> dict[str, Any]:
        """Create a simulation, optionally moving it on at once; return its record.
        ``requested_by`` (who asked) goes into its state events.

        Raises:
            ExperimentNotFound; InvalidRequest: the main script is not in the experiment;
            DuplicateSimulation: the client-chosen id is taken; CapacityReached.
        """
        config = self.experiments.config(new.experiment)
        main_script = new.main_script or config.get("main_script")
        if not self.experiments.has_file(new.experiment, main_script):
            raise InvalidRequest(f"main_script {main_script!r} is not in experiment "
                                 f"{new.experiment!r}", code="invalid_main_script")
        with self._admission:
            if new.state is not None:
                self._admit()
            sup = self._insert(new, main_script)
            sup.mailbox.post(sup.keeper.created, requested_by)
            if new.state is not None:
                sup.lifecycle.request(new.state, requested_by=requested_by)
        sup.wait_saved(_PERSIST_WAIT)
        return sup.snapshot

    def _insert(self, new: NewSimulation, main_script: str) -> SimulationSupervisor:
        with self._lock:
            sim_id = new.id or self._new_id()
            if sim_id in self._sims:
                raise DuplicateSimulation(f"a simulation with id {sim_id!r} exists")
            record = SimulationRecord(id=sim_id, experiment=new.experiment,
                                      main_script=main_script, params=new.params,
                                      timeout=new.timeout, limits=new.limits)
            self.rt.registry.insert(record)
            sup = self._sims[sim_id] = SimulationSupervisor(record, self.rt)
        logger.info("created: sim %s (experiment %s)", sim_id, record.experiment)
        return sup

    def set_state(self, sim_id: str, target: SimState,
                  requested_by: str | None = None) -> SimState:
        """Accept an operator's state request; the work follows on the supervisor.

        Answers once the new state is persisted. ``requested_by`` (who asked) goes into
        the state events.

        Raises:
            SimulationNotFound, UnknownState, InvalidTransition, CapacityReached.
        """
        sup = self.get(sim_id)
        if target in _LAUNCHING and sup.state == SimState.CREATED:
            with self._admission:
                sup.lifecycle.plan(target)  # refuse bad requests before counting
                self._admit()
                state = sup.lifecycle.request(target, requested_by=requested_by)
        else:
            state = sup.lifecycle.request(target, requested_by=requested_by)
        sup.wait_saved(_PERSIST_WAIT)
        return state

    def _admit(self) -> None:
        """Refuse to launch one more simulation beyond ``max_running``.

        Raises:
            CapacityReached: the cap is reached; nothing changes.
        """
        cap = self.rt.config.max_running
        if cap and self.count_active() >= cap:
            raise CapacityReached(f"{cap} simulations are running already (the cap); stop one "
                                  "or wait for one to end")

    def wait_ended(self, sim_id: str, timeout: float) -> dict[str, Any]:
        """The record once the simulation has ended, with its ``results`` listed; or,
        after ``timeout`` s, the record as it stands (without ``results``)."""
        sup = self.get(sim_id)
        if not sup.ended.wait(timeout):
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
                  limit: int | None = None) -> tuple[Iterator[bytes] | BinaryIO, str]:
        """A stream of ``[offset, offset + limit)`` of a log or result file, and its name.

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
