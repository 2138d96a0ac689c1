"""The simulation manager: creates, finds, drives and removes simulations.

Resources call exactly one method here per request. Work that takes time
happens on each simulation's supervisor, never on the request thread.
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from backend.errors import BadRequest, Conflict, NotFound, SimulationNotFound, TooManyRequests
from backend.experiments import ExperimentStore
from backend.limits import check_limits, check_positive
from backend.registry import DuplicateSimulation, SimulationRecord
from backend.supervisor import Runtime, SimulationSupervisor
from backend.uploader import simulation_prefix
from lifecycle import ACTIVE_STATES, SimState, UnknownState, parse_state
from storage import InvalidKey, ObjectNotFound, StorageError, validate_key

logger = logging.getLogger(__name__)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # fullmatch: "$" would pass "x\n"
_POST_FIELDS = {"experiment", "id", "main_script", "timeout", "params", "state", "limits"}
_TIMEOUT_KEYS = {"sim_time", "real_time"}
_LAUNCHING = {SimState.INITIALIZED.value, SimState.STARTED.value}


class SimulationManager:
    """The registry of live :class:`SimulationSupervisor` objects, one per simulation."""

    def __init__(self, runtime: Runtime, experiments: ExperimentStore) -> None:
        self.rt = runtime
        self.experiments = experiments
        self._sims: dict[str, SimulationSupervisor] = {}
        self._lock = threading.Lock()
        # Counting running simulations and launching one more happen as one step.
        self._admission = threading.Lock()

    # -- start-up ---------------------------------------------------------------

    def load(self) -> None:
        """Load every record; re-adopt or reconcile the ones that were running; clean
        up what no record owns."""
        relaunch = []
        for record in self.rt.registry.load_all():
            sup = SimulationSupervisor(record, self.rt)
            self._sims[record.id] = sup
            state = SimState(record.state)
            if state in ACTIVE_STATES or (state.is_terminal and not record.logs_uploaded):
                if sup.recover():
                    relaunch.append(sup)
        self._clean_orphans()
        for sup in relaunch:
            sup.relaunch()

    def _clean_orphans(self) -> None:
        """Kill simulation servers and remove run dirs that no record owns."""
        runs = self.rt.config.runs_dir
        for sim_id, proc in self.rt.launcher.find_servers(runs).items():
            sup = self._sims.get(sim_id)
            if sup is None or sup.process is None or sup.process.pid != proc.pid:
                self.rt.launcher.kill_orphan(sim_id, proc)
        if runs.is_dir():
            for run_dir in runs.iterdir():
                if run_dir.name not in self._sims:
                    logger.warning("removing orphan run dir %s", run_dir)
                    shutil.rmtree(run_dir, ignore_errors=True)

    def running(self) -> list[SimulationSupervisor]:
        """Supervisors whose simulation server is alive."""
        with self._lock:
            sims = list(self._sims.values())
        return [s for s in sims if s.process is not None and not s.process.exited.is_set()]

    # -- queries ------------------------------------------------------------------

    def get(self, sim_id: str) -> SimulationSupervisor:
        try:
            return self._sims[sim_id]
        except KeyError:
            raise SimulationNotFound(f"no simulation with id {sim_id!r}") from None

    def list(self, state: str | None = None, experiment: str | None = None) -> list[dict]:
        if state is not None:
            try:
                state = parse_state(state).value
            except ValueError as exc:
                raise UnknownState(str(exc)) from None
        with self._lock:
            sims = list(self._sims.values())
        return [s.record.to_dict() for s in sims
                if (state is None or s.record.state == state)
                and (experiment is None or s.record.experiment == experiment)]

    def count_active(self) -> int:
        with self._lock:
            return sum(1 for s in self._sims.values() if SimState(s.record.state) in ACTIVE_STATES)

    # -- commands -----------------------------------------------------------------

    def create(self, body: Any) -> SimulationRecord:
        """Create a simulation from a POST body, optionally moving it on at once.

        Raises:
            BadRequest: malformed fields. ExperimentNotFound: unknown experiment.
            Conflict: the client-chosen id is taken.
        """
        fields = _check_post(body)
        config = self.experiments.config(fields["experiment"])
        main_script = fields.get("main_script") or config.get("main_script")
        if not self.experiments.has_file(fields["experiment"], main_script):
            raise BadRequest(f"main_script {main_script!r} is not in experiment "
                             f"{fields['experiment']!r}", code="invalid_main_script")
        target = fields.get("state")
        with self._admission:
            if target is not None:
                self._admit()
            return self._insert(fields, main_script, target)

    def _insert(self, fields: dict[str, Any], main_script: str,
                target: str | None) -> SimulationRecord:
        with self._lock:
            sim_id = fields.get("id") or self._new_id()
            if sim_id in self._sims:
                raise Conflict(f"a simulation with id {sim_id!r} exists", code="duplicate_id")
            record = SimulationRecord(id=sim_id, experiment=fields["experiment"],
                                      main_script=main_script, params=fields.get("params", {}),
                                      timeout=fields.get("timeout", {}),
                                      limits=fields.get("limits", {}))
            try:
                self.rt.registry.insert(record)
            except DuplicateSimulation:
                raise Conflict(f"a simulation with id {sim_id!r} exists",
                               code="duplicate_id") from None
            sup = SimulationSupervisor(record, self.rt)
            self._sims[sim_id] = sup
        logger.info("created: sim %s (experiment %s)", sim_id, record.experiment)
        if target is not None:
            sup.lifecycle.request(target)
        return record

    def set_state(self, sim_id: str, target: Any) -> SimState:
        """Accept an operator's state request; the work follows on the supervisor.

        Raises:
            SimulationNotFound, UnknownState (400), InvalidTransition (409).
        """
        sup = self.get(sim_id)
        if not isinstance(target, str):
            raise UnknownState("'state' must be a string naming a state")
        if target in _LAUNCHING and sup.record.state == SimState.CREATED.value:
            with self._admission:
                sup.lifecycle.plan(target)  # refuse bad requests before counting
                self._admit()
                return sup.lifecycle.request(target)
        return sup.lifecycle.request(target)

    def _admit(self) -> None:
        """Refuse to launch one more simulation beyond ``max_running``.

        Raises:
            TooManyRequests: the cap is reached; nothing changes.
        """
        cap = self.rt.config.max_running
        if cap and self.count_active() >= cap:
            raise TooManyRequests(f"{cap} simulations are running already (the cap); stop one "
                                  "or wait for one to end", code="too_many_running")

    def delete(self, sim_id: str) -> None:
        """Remove a finished simulation, its stored logs and results.

        Raises:
            Conflict: it is not in a terminal state, or its upload is still going on.
        """
        sup = self.get(sim_id)
        if not sup.is_terminal:
            raise Conflict(f"simulation {sim_id} is {sup.record.state}; stop it first",
                           code="not_terminal")
        # Once the logs are uploaded only the run dir's removal is left: wait for it.
        if not sup.done.is_set() and not (sup.record.logs_uploaded and sup.done.wait(5.0)):
            raise Conflict(f"simulation {sim_id} is still being wound up", code="busy")
        if not self.rt.uploader.cancel(sim_id):
            raise Conflict(f"simulation {sim_id}'s upload is being retried right now",
                           code="busy")
        try:
            self.rt.storage.delete_prefix(simulation_prefix(sim_id))
        except StorageError:
            self.rt.uploader.resume(sup)  # not deleted: keep trying to upload it
            raise
        shutil.rmtree(sup.run_dir, ignore_errors=True)
        with self._lock:
            self._sims.pop(sim_id, None)
            self.rt.registry.delete(sim_id)
        logger.info("deleted: sim %s", sim_id)

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
        if not sup.record.logs_uploaded:
            folder = sup.run_dir / kind
            try:
                return sorted(({"name": p.relative_to(folder).as_posix(), "size": p.stat().st_size}
                               for p in folder.rglob("*") if p.is_file()),
                              key=lambda f: f["name"])
            except FileNotFoundError:
                if not sup.record.logs_uploaded:
                    return []
        prefix = f"{simulation_prefix(sim_id)}{kind}/"
        return [{"name": i.key[len(prefix):], "size": i.size}
                for i in self.rt.storage.list(prefix)]

    def open_file(self, sim_id: str, kind: str, name: str, offset: int = 0,
                  limit: int | None = None) -> tuple[Iterator[bytes] | BinaryIO, str]:
        """A stream of ``[offset, offset + limit)`` of a log or result file, and its name.

        Raises:
            BadRequest: a bad name; NotFound: no such file.
        """
        sup = self.get(sim_id)
        try:
            name = validate_key(name)
        except InvalidKey as exc:
            raise BadRequest(str(exc), code="invalid_name") from None
        if not sup.record.logs_uploaded:
            try:
                return _open_range(sup.run_dir / kind / name, offset, limit), name
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                if not sup.record.logs_uploaded:
                    raise NotFound(f"simulation {sim_id} has no {kind} file {name!r}") from None
        try:
            key = f"{simulation_prefix(sim_id)}{kind}/{name}"
            return self.rt.storage.open_read(key, offset, limit), name
        except ObjectNotFound:
            raise NotFound(f"simulation {sim_id} has no {kind} file {name!r}") from None


def _open_range(path: Path, offset: int, limit: int | None) -> Iterator[bytes]:
    f = open(path, "rb")
    f.seek(min(offset, os.fstat(f.fileno()).st_size))  # past the end reads nothing

    def chunks() -> Iterator[bytes]:
        with f:
            remaining = math.inf if limit is None else limit
            while remaining > 0:
                data = f.read(int(min(remaining, 1 << 16)))
                if not data:
                    return
                remaining -= len(data)
                yield data

    return chunks()


def _check_post(body: Any) -> dict[str, Any]:
    """Validate a ``POST /v1/simulations`` body.

    Raises:
        BadRequest: with a message naming the offending field.
    """
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = set(body) - _POST_FIELDS
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}", code="unknown_field")
    if not isinstance(body.get("experiment"), str) or not body["experiment"]:
        raise BadRequest("'experiment' (a name) is required", code="missing_field")
    if "id" in body and (not isinstance(body["id"], str) or not _ID.fullmatch(body["id"])):
        raise BadRequest("'id' must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit", code="invalid_id")
    if "main_script" in body:
        try:
            validate_key(body["main_script"] if isinstance(body["main_script"], str) else "")
        except InvalidKey:
            raise BadRequest("'main_script' must be a relative path inside the experiment",
                             code="invalid_main_script") from None
    if "params" in body and not isinstance(body["params"], dict):
        raise BadRequest("'params' must be a JSON object", code="invalid_params")
    if "timeout" in body:
        _check_timeout(body["timeout"])
    if "limits" in body:
        check_limits(body["limits"])
    if "state" in body:
        if body["state"] not in (SimState.INITIALIZED.value, SimState.STARTED.value):
            raise UnknownState("'state' may be 'initialized' or 'started' at creation")
    return dict(body)


def _check_timeout(timeout: Any) -> None:
    if not isinstance(timeout, dict) or set(timeout) - _TIMEOUT_KEYS:
        raise BadRequest("'timeout' must be an object with 'sim_time' (ms) and/or "
                         "'real_time' (s)", code="invalid_timeout")
    for key, value in timeout.items():
        check_positive(f"timeout.{key}", value, "invalid_timeout")
