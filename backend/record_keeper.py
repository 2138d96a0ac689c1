"""The one writer of a simulation's record.

A :class:`RecordKeeper` owns one :class:`SimulationRecord`: it changes it, saves it to
the registry, uploads it with the run's files, deletes it. Every method runs on the
simulation's mailbox (see :mod:`backend.supervisor`); other threads read
:attr:`RecordKeeper.snapshot`, a dict replaced whole after every save.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from backend.ending import exit_code
from backend.events import Event
from backend.events.hub import end_data
from backend.exceptions import SimulationBusy
from backend.launchers import Exit, file_tail
from backend.registry import SimulationRecord, utc_now
from backend.services import Runtime
from backend.status import FINAL_STATUS_KEYS, final_status
from backend.uploader import UploadJob, simulation_prefix
from lifecycle import SimState
from lifecycle.messages import LOGS_DIR, RESULTS_DIR, STDERR_LOG
from storage import StorageError
from storage.tree import remove_tree, scan

logger = logging.getLogger(__name__)

_STDERR_TAIL_LINES = 20
_SKIPPED_LISTED = 50


class RecordKeeper:
    """Keeps one simulation's record; ``post`` queues a call on its mailbox."""

    def __init__(self, record: SimulationRecord, runtime: Runtime, run_dir: Path,
                 post: Callable[..., None]) -> None:
        self.record = record
        self.rt = runtime
        self.run_dir = run_dir
        self._post = post
        self.snapshot: dict[str, Any] = record.to_dict()
        self.deleted = False
        self._unpublished: list[Event] = []

    def save(self, event: tuple[str, dict[str, Any]] | None = None) -> None:
        """Save the record (and ``event`` of it, in the same transaction: it is published
        by :meth:`publish`)."""
        self.record.updated_at = utc_now()
        stored = self.rt.registry.save(self.record, event)
        self.snapshot = self.record.to_dict()
        if stored is not None:
            self._unpublished.append(Event.stored(stored, self.snapshot))

    def publish(self) -> None:
        """Hand the saved events to their subscribers. Posted after the save, so a
        request waiting for its change to be saved never waits for many subscribers'
        threads to wake."""
        events, self._unpublished = self._unpublished, []
        for event in events:
            self.rt.events.publish(event)

    def set_state(self, state: SimState, change: dict[str, Any]) -> None:
        """Enter ``state``; ``change`` says from where, by which trigger, who asked."""
        self.record.state = state
        data = {"state": state.value, **change, "at": utc_now()}
        if state.is_terminal:
            data["error"] = self.record.error
        self.save(("state", data))

    def created(self, requested_by: str | None) -> None:
        """The event of the simulation's creation (the record is inserted already)."""
        self._announce("state", {"state": self.record.state.value, "previous": None,
                                 "trigger": "create", "requested_by": requested_by,
                                 "at": self.record.created_at})

    def announce_end(self) -> None:
        """The ``end`` event, once (a wind-up repeated after a restart adds none)."""
        if not self.rt.registry.has_event(self.record.id, "end"):
            self._announce("end", end_data(self.snapshot))

    def _announce(self, type: str, data: dict[str, Any]) -> None:
        stored = self.rt.registry.append_event(self.record.id, type, data)
        self.rt.events.publish(Event.stored(stored, self.snapshot))

    def update(self, **fields: Any) -> None:
        """Change plain fields of the record (the queue's priority) and save it."""
        for name, value in fields.items():
            setattr(self.record, name, value)
        self.save()

    def ended(self, error: dict[str, Any] | None) -> None:
        """The end's time and error: saved by :meth:`set_state` with the terminal state,
        which always comes next (one transaction, one write at the end of a run)."""
        self.record.ended_at = utc_now()
        if error is not None:
            self.record.error = error

    def launching(self, version: str | None, limits: dict[str, Any]) -> None:
        """The version of the experiment the launch fetched (None: it fetched none) and
        the limits it resolved. Saved before the server starts: a backend adopting the
        server after a restart takes its limits from here, not from the run dir, which
        is the script's to rewrite."""
        if version is not None:
            self.record.experiment_version = version
        self.record.effective_limits = limits
        self.save()

    def reset_status(self) -> None:
        self.record.status = {}
        self.save()

    def exited(self, exit: Exit) -> tuple[SimState | None, dict | None, str, str | None]:
        """Take in what a gone server left (``status.json``, the end of ``stderr.log``);
        return its reported state, its error, that tail and what was wrong with its
        ``status.json`` (None if nothing), for the verdict."""
        status, problem = final_status(self.run_dir)
        if problem is not None:
            logger.warning("sim %s: %s", self.record.id, problem)
        self.record.exit_code = exit_code(exit, status.get("exit_code"))
        self.record.status = {**self.record.status,
                              **{k: status[k] for k in FINAL_STATUS_KEYS if k in status}}
        reported = SimState(status["state"]) if "state" in status else None
        tail = file_tail(self.run_dir / LOGS_DIR / STDERR_LOG, _STDERR_TAIL_LINES)
        return reported, status.get("error"), tail, problem

    # -- after the end -------------------------------------------------------------

    def upload(self) -> None:
        """Upload logs, results and the record (retried by the uploader until it works).

        What the script left that is not a regular file (links, FIFOs, devices) or lies
        beyond the limits of depth and count is not uploaded: the record says so.
        """
        if self.record.logs_uploaded:
            return
        skipped = {}
        for sub in (LOGS_DIR, RESULTS_DIR):
            tree = scan(self.run_dir / sub, max_files=self.rt.config.max_result_files)
            skipped.update({f"{sub}/{name}": why for name, why in tree.skipped.items()})
        if skipped:
            listed = sorted(skipped.items())[:_SKIPPED_LISTED]
            self.record.upload = {
                "skipped": [{"path": path, "reason": why} for path, why in listed],
                "skipped_count": len(skipped),
                "message": f"{len(skipped)} entries of the run were not uploaded: only "
                           "regular files are, up to the limits of depth and count"}
            logger.warning("sim %s: not uploading %d entries (%s ...)", self.record.id,
                           len(skipped), listed[0][0])
            self.save()
        self.rt.uploader.upload(self._upload_job())

    def _upload_job(self) -> UploadJob:
        return UploadJob(self.record.id, self.run_dir, lambda: dict(self.snapshot),
                         lambda: self._post(self._uploaded))

    def _uploaded(self) -> None:
        if self.deleted:
            return
        self.record.logs_uploaded = True
        self.save()
        remove_tree(self.run_dir)

    def delete(self) -> None:
        """Remove the stored copy, the run dir and the record.

        Raises:
            SimulationBusy: an upload of it is in flight; StorageError: its stored copy
            could not be deleted (then nothing was).
        """
        sim_id = self.record.id
        if not self.rt.uploader.cancel(sim_id):
            raise SimulationBusy(f"simulation {sim_id}'s upload is being retried right now")
        try:
            self.rt.storage.delete_prefix(simulation_prefix(sim_id))
        except StorageError:
            if not self.record.logs_uploaded:
                self.rt.uploader.resume(self._upload_job())  # keep trying to upload it
            raise
        remove_tree(self.run_dir)
        self.rt.registry.delete(sim_id)
        self.deleted = True
