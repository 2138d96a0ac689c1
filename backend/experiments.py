"""Experiments in storage: ``experiments/<name>/...``."""
from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, BinaryIO

from backend.archive import EXPERIMENT_FILE, check_config, unpack_experiment, validate_name
from backend.errors import ExperimentNotFound, InvalidArchive
from storage import ObjectInfo, ObjectNotFound, Storage

logger = logging.getLogger(__name__)

PREFIX = "experiments/"


def experiment_prefix(name: str) -> str:
    return f"{PREFIX}{validate_name(name)}/"


class ExperimentStore:
    """Lists, describes, stores and deletes experiments."""

    def __init__(self, storage: Storage, scratch_dir: Path, max_archive_bytes: int) -> None:
        self.storage = storage
        self.scratch_dir = scratch_dir
        self.max_archive_bytes = max_archive_bytes
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def list(self) -> list[dict[str, Any]]:
        by_name: defaultdict[str, list[ObjectInfo]] = defaultdict(list)
        for info in self.storage.list(PREFIX):
            name, _, rest = info.key[len(PREFIX):].partition("/")
            if rest:
                by_name[name].append(info)
        return [self._summary(name, infos) for name, infos in sorted(by_name.items())]

    def _summary(self, name: str, infos: list[ObjectInfo]) -> dict[str, Any]:
        summary: dict[str, Any] = {"name": name, "files": len(infos),
                                   "size": sum(i.size for i in infos)}
        try:
            config = self.config(name)
        except (ExperimentNotFound, InvalidArchive) as exc:
            return {**summary, "main_script": None, "problem": str(exc)}
        engines = config.get("engines") if isinstance(config.get("engines"), dict) else {}
        return {**summary, "main_script": config.get("main_script"),
                "description": config.get("description", ""),
                "timestep": config.get("timestep", 1.0),
                "engines": {k: v.get("type") for k, v in engines.items() if isinstance(v, dict)}}

    def config(self, name: str) -> dict[str, Any]:
        """The parsed ``experiment.json``.

        Raises:
            ExperimentNotFound: no such experiment.
            InvalidArchive: its ``experiment.json`` is unreadable.
        """
        try:
            raw = self.storage.read_bytes(experiment_prefix(name) + EXPERIMENT_FILE)
        except ObjectNotFound:
            raise ExperimentNotFound(f"no experiment named {name!r}") from None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise InvalidArchive(f"{name}/{EXPERIMENT_FILE} is not valid JSON: {exc}") from None

    def files(self, name: str) -> list[dict[str, Any]]:
        prefix = experiment_prefix(name)
        return [{"path": i.key[len(prefix):], "size": i.size} for i in self.storage.list(prefix)]

    def describe(self, name: str) -> dict[str, Any]:
        files = self.files(name)
        if not files:
            raise ExperimentNotFound(f"no experiment named {name!r}")
        return {"name": name, "config": self.config(name), "files": files}

    def has_file(self, name: str, path: str) -> bool:
        return self.storage.exists(experiment_prefix(name) + path)

    def put_archive(self, name: str, stream: BinaryIO) -> bool:
        """Store the experiment in a ``.tar.gz`` stream; True if it is new.

        Raises:
            BadRequest: bad name; InvalidArchive: bad archive (nothing is stored).
        """
        prefix = experiment_prefix(name)
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.scratch_dir) as tmp:
            _, root = unpack_experiment(stream, Path(tmp), self.max_archive_bytes)
            return self._replace(name, prefix, root)

    def put_dir(self, name: str, folder: Path) -> bool:
        """Store an experiment folder as it is (used to seed the examples)."""
        prefix = experiment_prefix(name)
        files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        check_config(json.loads((folder / EXPERIMENT_FILE).read_text()), files)
        return self._replace(name, prefix, folder)

    def _replace(self, name: str, prefix: str, folder: Path) -> bool:
        with self._locks[name]:
            old = {i.key for i in self.storage.list(prefix)}
            new = {i.key for i in self.storage.upload_dir(folder, prefix)}
            for key in sorted(old - new):
                self.storage.delete(key)
        logger.info("stored: experiment %s (%d files)", name, len(new))
        return not old

    def delete(self, name: str) -> None:
        prefix = experiment_prefix(name)
        with self._locks[name]:
            if not self.storage.delete_prefix(prefix):
                raise ExperimentNotFound(f"no experiment named {name!r}")
        logger.info("deleted: experiment %s", name)


def seed_examples(store: ExperimentStore, examples_dir: Path) -> list[str]:
    """Put every example experiment that storage lacks into it."""
    present = {e["name"] for e in store.list()}
    added = []
    for folder in sorted(p.parent for p in examples_dir.glob(f"*/{EXPERIMENT_FILE}")):
        if folder.name not in present:
            store.put_dir(folder.name, folder)
            added.append(folder.name)
    return added


__all__ = ["ExperimentStore", "experiment_prefix", "seed_examples"]
