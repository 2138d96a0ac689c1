"""Uploading a finished simulation's logs, results and record to storage.

The uploader only moves files: the supervisor that asked marks the record uploaded
and removes the run directory (see :class:`UploadJob`), so a run directory goes only
after a verified upload. A failed upload is retried in the background with doubling
delays, for as long as it takes; nothing is lost while storage is down.

What goes up is capped: each log file to ``max_log_bytes`` (its head cut, see
:mod:`backend.disk_limits`), the results to ``max_results_bytes`` — files in path
order while they fit, the rest left out and named in the stored ``record.json``'s
``results_left_out``.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from backend.disk_limits import cap_logs, folder_size
from lifecycle.messages import LOGS_DIR, RESULTS_DIR
from storage import Storage, StorageError
from storage.tree import remove_tree, scan

logger = logging.getLogger(__name__)

_MAX_DELAY = 300.0
_CAPPED_RESULTS = ".results-capped"  # in the run dir: hard links to what is uploaded
_LEFT_OUT_NAMES = 100


def simulation_prefix(sim_id: str) -> str:
    return f"simulations/{sim_id}/"


@dataclass(frozen=True)
class UploadJob:
    """One simulation to upload: its run dir, the record to store beside its files,
    and what to call once the upload is verified (on the uploading thread)."""

    sim_id: str
    run_dir: Path
    record: Callable[[], dict[str, Any]]
    on_uploaded: Callable[[], None]


class Uploader:
    """Uploads finished simulations; keeps retrying the ones that failed."""

    def __init__(self, storage: Storage, retry_delay: float, max_files: int = 10_000,
                 max_log_bytes: int = 0, max_results_bytes: int = 0) -> None:
        self.storage = storage
        self.max_files = max_files
        self.retry_delay = retry_delay
        self.max_log_bytes = max_log_bytes
        self.max_results_bytes = max_results_bytes
        self._pending: dict[str, tuple[UploadJob, float, float]] = {}
        self._active: set[str] = set()  # uploading right now
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._retry_loop, name="upload-retry",
                                        daemon=True)
        self._thread.start()

    def upload(self, job: UploadJob) -> bool:
        """Upload now; on failure, schedule retries and return False. Once closed, leave
        it to the next start (which uploads every ended run not uploaded yet)."""
        with self._cond:
            if self._closed:
                logger.info("upload deferred: sim %s: the backend is stopping; the next "
                            "start uploads it", job.sim_id)
                return False
            self._active.add(job.sim_id)
        return self._attempt(job, self.retry_delay)

    def cancel(self, sim_id: str) -> bool:
        """Drop the retries of `sim_id` (it is being deleted); False if it is uploading now."""
        with self._cond:
            if sim_id in self._active:
                return False
            self._pending.pop(sim_id, None)
            return True

    def resume(self, job: UploadJob) -> None:
        """Retry `job` again after a :meth:`cancel`."""
        self._schedule(job, self.retry_delay)

    def close(self, timeout: float = 5.0) -> list[str]:
        """Stop retrying, and give the uploads in flight ``timeout`` s to end; return the
        simulations still uploading then (storage not answering). Pending and unfinished
        uploads are made again by the next start, from the run dirs."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            while self._active and self._cond.wait(max(0.0, deadline - time.monotonic())):
                pass
            left = sorted(self._active)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return left

    def _transfer(self, job: UploadJob) -> None:
        prefix = simulation_prefix(job.sim_id)
        count, left_out = 0, None
        logs, results = job.run_dir / LOGS_DIR, job.run_dir / RESULTS_DIR
        if logs.is_dir():
            cap_logs(logs, self.max_log_bytes)  # the run has ended: no writer is left
            count += len(self.storage.upload_dir(logs, f"{prefix}{LOGS_DIR}/",
                                                 max_files=self.max_files))
        if results.is_dir():
            if self.max_results_bytes and folder_size(results) > self.max_results_bytes:
                results, left_out = _within(results, job.run_dir / _CAPPED_RESULTS,
                                            self.max_results_bytes)
                logger.warning("upload: sim %s: left out %d results files (%d bytes) over "
                               "the limit", job.sim_id, left_out["count"], left_out["bytes"])
            count += len(self.storage.upload_dir(results, f"{prefix}{RESULTS_DIR}/",
                                                 max_files=self.max_files))
        final = {**job.record(), "logs_uploaded": True}
        if left_out is not None:
            final["results_left_out"] = left_out
        self.storage.put_bytes(f"{prefix}record.json", json.dumps(final, indent=1).encode())
        logger.info("uploaded: sim %s (%d files) to %s", job.sim_id, count,
                    self.storage.describe())

    def _schedule(self, job: UploadJob, delay: float) -> None:
        with self._cond:
            self._pending[job.sim_id] = (job, time.monotonic() + delay, delay)
            self._cond.notify_all()

    def _retry_loop(self) -> None:
        while (due := self._next_due()) is not None:
            self._attempt(*due)

    def _next_due(self) -> tuple[UploadJob, float] | None:
        """The retry due first once it is due, marked active, and the delay after it;
        None once closed (what is left is for the next start)."""
        with self._cond:
            while not self._closed:
                first = min(self._pending.values(), key=lambda p: p[1], default=None)
                now = time.monotonic()
                if first is not None and first[1] <= now:
                    job, _, delay = first
                    del self._pending[job.sim_id]
                    self._active.add(job.sim_id)
                    return job, min(delay * 2, _MAX_DELAY)
                self._cond.wait(None if first is None else first[1] - now)
            return None

    def _attempt(self, job: UploadJob, next_delay: float) -> bool:
        """Upload `job` (marked active by the caller); on any failure try again after
        `next_delay` s and return False. Never raises: the retrier must live on."""
        try:
            self._transfer(job)
        except Exception as exc:
            if not isinstance(exc, (StorageError, OSError)):
                logger.exception("upload failed unexpectedly: sim %s", job.sim_id)
            logger.warning("upload failed: sim %s: %s; retrying in %g s", job.sim_id, exc,
                           next_delay)
            self._schedule(job, next_delay)
            return False
        finally:
            with self._cond:
                self._active.discard(job.sim_id)
                self._cond.notify_all()
        job.on_uploaded()
        return True


def _within(results: Path, staging: Path, cap: int) -> tuple[Path, dict[str, Any]]:
    """Hard-link into ``staging`` the results files that fit in ``cap`` bytes, in path
    order; return it and what was left out."""
    remove_tree(staging)
    used, left = 0, []
    for relative, (path, size) in sorted(scan(results).files.items()):
        if used + size > cap:
            left.append((relative, size))
            continue
        used += size
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        os.link(path, staging / relative)
    staging.mkdir(exist_ok=True)
    return staging, {"count": len(left), "bytes": sum(size for _, size in left),
                     "limit_bytes": cap, "files": [name for name, _ in left[:_LEFT_OUT_NAMES]]}
