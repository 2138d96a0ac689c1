"""Uploading a finished simulation's logs, results and record to storage.

A run directory is removed only after its upload was verified. A failed upload
is retried in the background with doubling delays, for as long as it takes;
nothing is lost while storage is down.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from typing import TYPE_CHECKING

from lifecycle.messages import LOGS_DIR, RESULTS_DIR
from storage import Storage, StorageError

if TYPE_CHECKING:
    from backend.supervisor import SimulationSupervisor

logger = logging.getLogger(__name__)

_MAX_DELAY = 300.0


def simulation_prefix(sim_id: str) -> str:
    return f"simulations/{sim_id}/"


class Uploader:
    """Uploads finished simulations; keeps retrying the ones that failed."""

    def __init__(self, storage: Storage, retry_delay: float) -> None:
        self.storage = storage
        self.retry_delay = retry_delay
        self._pending: dict[str, tuple[SimulationSupervisor, float, float]] = {}
        self._active: set[str] = set()  # uploading right now
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._retry_loop, name="upload-retry",
                                        daemon=True)
        self._thread.start()

    def upload(self, sup: SimulationSupervisor) -> bool:
        """Upload now; on failure, schedule retries and return False."""
        if sup.record.logs_uploaded:
            return True
        with self._cond:
            self._active.add(sup.sim_id)
        return self._attempt(sup, self.retry_delay)

    def pending(self) -> list[str]:
        with self._cond:
            return list(self._pending)

    def cancel(self, sim_id: str) -> bool:
        """Drop the retries of `sim_id` (it is being deleted); False if it is uploading now."""
        with self._cond:
            if sim_id in self._active:
                return False
            self._pending.pop(sim_id, None)
            return True

    def resume(self, sup: SimulationSupervisor) -> None:
        """Retry `sup` again after a :meth:`cancel`, unless its upload is done."""
        if not sup.record.logs_uploaded:
            self._schedule(sup, self.retry_delay)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _upload(self, sup: SimulationSupervisor) -> None:
        record, run_dir = sup.record, sup.run_dir
        prefix = simulation_prefix(record.id)
        count = 0
        for sub in (LOGS_DIR, RESULTS_DIR):
            if (run_dir / sub).is_dir():
                count += len(self.storage.upload_dir(run_dir / sub, f"{prefix}{sub}/"))
        final = {**record.to_dict(), "logs_uploaded": True}
        self.storage.put_bytes(f"{prefix}record.json", json.dumps(final, indent=1).encode())
        record.logs_uploaded = True
        sup.save()
        shutil.rmtree(run_dir, ignore_errors=True)
        logger.info("uploaded: sim %s (%d files) to %s", record.id, count,
                    self.storage.describe())

    def _schedule(self, sup: SimulationSupervisor, delay: float) -> None:
        with self._cond:
            self._pending[sup.sim_id] = (sup, time.monotonic() + delay, delay)
            self._cond.notify_all()

    def _done(self, sim_id: str) -> None:
        with self._cond:
            self._active.discard(sim_id)

    def _retry_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    due = [p for p in self._pending.values() if p[1] <= time.monotonic()]
                    if due:
                        break
                    nxt = min((p[1] for p in self._pending.values()), default=None)
                    self._cond.wait(None if nxt is None else max(0.0, nxt - time.monotonic()))
                if self._closed:
                    return
                for sup, _, _ in due:
                    del self._pending[sup.sim_id]
                    self._active.add(sup.sim_id)
            for sup, _, delay in due:
                self._attempt(sup, min(delay * 2, _MAX_DELAY))

    def _attempt(self, sup: SimulationSupervisor, next_delay: float) -> bool:
        """Upload `sup` (marked active by the caller); on any failure try again after
        `next_delay` s and return False. Never raises: the retrier must live on."""
        try:
            self._upload(sup)
            return True
        except Exception as exc:
            if not isinstance(exc, (StorageError, OSError)):
                logger.exception("upload failed unexpectedly: sim %s", sup.sim_id)
            logger.warning("upload failed: sim %s: %s; retrying in %g s", sup.sim_id, exc,
                           next_delay)
            self._schedule(sup, next_delay)
            return False
        finally:
            self._done(sup.sim_id)
