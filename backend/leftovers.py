"""Start-up: a private data dir, and what a killed backend left behind removed.

A ``kill -9`` mid-upload leaves scratch folders in ``<data_dir>/tmp``, ``.tmp-*`` parts
in a storage folder and versions of experiments no pointer names. Nothing else removes
them, so a backend does at start-up.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from backend.experiments import ExperimentStore
from storage import Storage, StorageError

logger = logging.getLogger(__name__)

#: Seconds a storage temp file must have gone unwritten before it counts as dead. All of
#: them could go at start-up if this backend were the folder's only writer, but a second
#: backend or tool may share a storage folder; an hour without a single write is no live
#: upload.
STALE_TEMP_SECONDS = 3600.0


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data dir readable by its owner alone (registry, tokens, run files)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)  # an existing dir keeps its old mode through mkdir


def scratch_dir(data_dir: Path) -> Path:
    return data_dir / "tmp"


def sweep(data_dir: Path, storage: Storage, store: ExperimentStore) -> None:
    """Remove the leftovers of a killed backend; storage trouble is logged, not raised.

    Everything in the scratch dir goes: it lives as long as one request of this data
    dir's one backend, and that backend is only starting.
    """
    scratch = scratch_dir(data_dir)
    if scratch.is_dir():
        leftovers = list(scratch.iterdir())
        for path in leftovers:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if leftovers:
            logger.info("removed: %d leftovers in the scratch dir", len(leftovers))
    try:
        storage.remove_stale_temp_files(STALE_TEMP_SECONDS)
        # No upload or fetch of this backend is in flight yet: every version that no
        # pointer names is a leftover (a partial upload) or superseded.
        removed = store.collect(now=float("inf"))
        if removed:
            logger.info("removed: %d objects of partial or superseded experiment versions",
                        removed)
    except StorageError as exc:
        logger.error("could not sweep storage for leftovers: %s", exc)
