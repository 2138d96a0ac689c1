"""Experiments in storage, each version appearing whole or not at all.

Layout under ``experiments/<name>/``:

- ``versions/<version>/...``: one folder per stored version, written in full first;
- ``current.json``: the pointer ``{"version", "files", "size", "switched_at"}``, written
  last with one atomic put. Listing, describing and fetching read it; a version it does
  not name is invisible, so an upload cut short (a killed backend) is never listed.
- with no pointer, the folder itself is the experiment (``experiment.json`` beside the
  files): what ``aws s3 sync my-exp s3://.../experiments/my-exp`` makes. Its version
  is :data:`PLAIN_VERSION`.

A run fetches through :meth:`ExperimentStore.lease` (or :meth:`~ExperimentStore.resolve`),
so it gets one version's files even while the experiment is replaced. Superseded and
leftover versions are collected once no lease holds them and ``grace`` seconds have
passed since they stopped being current (covering readers that resolved without a lease).
"""
from __future__ import annotations

import builtins  # `list` is a method of ExperimentStore
import contextlib
import json
import logging
import secrets
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from backend.archive import EXPERIMENT_FILE, check_config, unpack_experiment, validate_name
from backend.exceptions import ExperimentNotFound, InvalidArchive
from backend.version_cache import VersionCache
from storage import ObjectInfo, ObjectNotFound, Storage, StorageError

logger = logging.getLogger(__name__)

PREFIX = "experiments/"
POINTER_FILE = "current.json"
VERSIONS = "versions/"
#: The version of an experiment stored in the plain layout (no pointer).
PLAIN_VERSION = "plain"


def experiment_prefix(name: str) -> str:
    return f"{PREFIX}{validate_name(name)}/"


def version_prefix(name: str, version: str) -> str:
    """Where the files of one version live (the plain version: the experiment's folder)."""
    if version == PLAIN_VERSION:
        return experiment_prefix(name)
    return f"{experiment_prefix(name)}{VERSIONS}{version}/"


def new_version() -> str:
    """A version id that sorts by creation time and records it (ms since the epoch)."""
    return f"{int(time.time() * 1000):013d}-{secrets.token_hex(4)}"


def _version_created(version: str) -> float:
    try:
        return int(version.split("-", 1)[0]) / 1000
    except ValueError:
        return 0.0  # not one of ours: as old as can be


@dataclass(frozen=True)
class Pointer:
    """The content of ``current.json``."""

    version: str
    files: int
    size: int
    switched_at: float
    #: Who uploaded the experiment first (None: seeded by the backend, or from before
    #: owners were kept); replacing it keeps its owner.
    owner: str | None = None


@dataclass
class _Layout:
    """What one experiment's folder holds, from one listing."""

    pointer_present: bool = False
    plain: builtins.list[ObjectInfo] = field(default_factory=builtins.list)  # outside versions/
    versions: dict[str, builtins.list[ObjectInfo]] = field(default_factory=dict)


def _layouts(infos: builtins.list[ObjectInfo]) -> dict[str, _Layout]:
    """Group a listing of ``experiments/`` by experiment name and version."""
    layouts: defaultdict[str, _Layout] = defaultdict(_Layout)
    for info in infos:
        name, _, rest = info.key[len(PREFIX):].partition("/")
        if not rest:
            continue
        layout = layouts[name]
        if rest == POINTER_FILE:
            layout.pointer_present = True
        elif rest.startswith(VERSIONS) and "/" in rest[len(VERSIONS):]:
            version = rest[len(VERSIONS):].split("/", 1)[0]
            layout.versions.setdefault(version, []).append(info)
        else:
            layout.plain.append(info)
    return layouts


class ExperimentStore:
    """Lists, describes, stores, resolves and deletes experiments."""

    def __init__(self, storage: Storage, scratch_dir: Path, max_archive_bytes: int,
                 grace: float = 300.0, cache: VersionCache | None = None) -> None:
        self.storage = storage
        #: Local copies of the versions fetched (None: every fetch from storage).
        self.cache = cache
        self.scratch_dir = scratch_dir
        self.max_archive_bytes = max_archive_bytes
        #: Seconds a superseded version stays for readers that resolved it without a lease.
        self.grace = grace
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()            # _leases and _writing
        self._leases: Counter[tuple[str, str]] = Counter()
        self._writing: set[tuple[str, str]] = set()
        self._collector: threading.Thread | None = None
        self._collector_stopped = threading.Event()

    # -- reading ----------------------------------------------------------------

    def pointer(self, name: str) -> Pointer | None:
        """The experiment's ``current.json``, None if it has none (plain layout or absent).

        Raises:
            InvalidName: bad name; StorageError: storage failed or the pointer is corrupt.
        """
        try:
            raw = self.storage.read_bytes(experiment_prefix(name) + POINTER_FILE)
        except ObjectNotFound:
            return None
        try:
            return Pointer(**json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise StorageError(f"the pointer of experiment {name!r} is corrupt: {exc}") from None

    def resolve(self, name: str) -> tuple[str, str]:
        """Return ``(version, prefix)``: the current version and the storage prefix to
        fetch its files from (``download_prefix(prefix, dest)``).

        Without a lease the version stays fetchable for :attr:`grace` seconds after it is
        superseded; :meth:`lease` holds it for as long as needed.

        Raises:
            ExperimentNotFound: no such experiment (or only a partial upload of one).
            InvalidName: bad name; StorageError: storage failed.
        """
        pointer = self.pointer(name)
        if pointer is not None:
            return pointer.version, version_prefix(name, pointer.version)
        if self.storage.exists(experiment_prefix(name) + EXPERIMENT_FILE):
            return PLAIN_VERSION, experiment_prefix(name)
        raise ExperimentNotFound(f"no experiment named {name!r}")

    @contextlib.contextmanager
    def lease(self, name: str) -> Iterator[tuple[str, str]]:
        """:meth:`resolve`, keeping that version from collection until the block ends.

        Raises:
            ExperimentNotFound, InvalidName, StorageError: as :meth:`resolve`.
        """
        version, prefix = self.resolve(name)
        with self._guard:
            self._leases[(name, version)] += 1
        try:
            yield version, prefix
        finally:
            with self._guard:
                self._leases[(name, version)] -= 1
                if self._leases[(name, version)] <= 0:
                    del self._leases[(name, version)]

    def fetch(self, name: str, dest: Path) -> tuple[str, int]:
        """Put the current version's files into ``dest`` (under a lease); return the
        version and how many files there were (0: none, as if there were no experiment).

        Raises:
            ExperimentNotFound, InvalidName, StorageError: as :meth:`resolve`, or the
                download failed.
        """
        with self.lease(name) as (version, prefix):
            if self.cache is None or version == PLAIN_VERSION:
                return version, len(self.storage.download_prefix(prefix, dest))
            return version, self.cache.fetch(self.storage, name, version, prefix, dest)

    def list(self) -> builtins.list[dict[str, Any]]:
        summaries = []
        owner: str | None = None
        for name, layout in sorted(_layouts(self.storage.list(PREFIX)).items()):
            if layout.pointer_present:
                pointer = self.pointer(name)
                if pointer is None:
                    continue  # deleted since the listing
                infos, owner = layout.versions.get(pointer.version, []), pointer.owner
            elif any(i.key == f"{PREFIX}{name}/{EXPERIMENT_FILE}" for i in layout.plain):
                infos, owner = layout.plain, None
            else:
                continue  # a partial upload or stray files: not an experiment
            summaries.append(self._summary(name, infos, owner))
        return summaries

    def _summary(self, name: str, infos: builtins.list[ObjectInfo],
                 owner: str | None) -> dict[str, Any]:
        summary: dict[str, Any] = {"name": name, "owner": owner, "files": len(infos),
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

    def config(self, name: str, prefix: str | None = None,
               version: str | None = None) -> dict[str, Any]:
        """The parsed ``experiment.json`` of the current version (or the one at ``prefix``;
        from this backend's copy of it when ``version`` is given and there is one).

        Raises:
            ExperimentNotFound: no such experiment.
            InvalidArchive: its ``experiment.json`` is unreadable.
        """
        if prefix is None:
            version, prefix = self.resolve(name)
        try:
            raw = self.cache.read(self.storage, name, version, EXPERIMENT_FILE) \
                if self._copies(version) else None
            if raw is None:
                raw = self.storage.read_bytes(prefix + EXPERIMENT_FILE)
        except (ObjectNotFound, FileNotFoundError):  # (a copy has every file its version has)
            raise ExperimentNotFound(f"no experiment named {name!r}") from None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise InvalidArchive(f"{name}/{EXPERIMENT_FILE} is not valid JSON: {exc}") from None

    def _copies(self, version: str | None) -> bool:
        """Whether this backend may hold a copy of ``version`` (a stored version, with a
        version cache; a plain folder's files can change in place)."""
        return self.cache is not None and version not in (None, PLAIN_VERSION)

    def files(self, name: str, prefix: str | None = None) -> builtins.list[dict[str, Any]]:
        prefix = prefix or self.resolve(name)[1]
        plain = prefix == experiment_prefix(name)
        files = [{"path": i.key[len(prefix):], "size": i.size} for i in self.storage.list(prefix)]
        return [f for f in files if not (plain and _is_layout_key(f["path"]))]

    def describe(self, name: str) -> dict[str, Any]:
        version, prefix = self.resolve(name)
        return {"name": name, "version": version, "owner": self.owner(name),
                "config": self.config(name, prefix, version),
                "files": self.files(name, prefix)}

    def has_file(self, name: str, path: str, prefix: str | None = None,
                 version: str | None = None) -> bool:
        """Whether the current version (or the one at ``prefix``, as :meth:`config`) has
        the file ``path``."""
        if prefix is None:
            version, prefix = self.resolve(name)
        found = self.cache.has(self.storage, name, version, path) \
            if self._copies(version) else None
        return self.storage.exists(prefix + path) if found is None else found

    # -- writing ----------------------------------------------------------------

    def owner(self, name: str) -> str | None:
        """Who owns the experiment (None: nobody, only admins may change it).

        Raises:
            ExperimentNotFound: no such experiment.
        """
        pointer = self.pointer(name)
        if pointer is None:
            self.resolve(name)  # a plain folder has no owner; raises if absent
            return None
        return pointer.owner

    def put_archive(self, name: str, stream: BinaryIO, owner: str | None = None) -> bool:
        """Store the experiment in a ``.tar.gz`` stream as its new version; True if it is new.

        Raises:
            InvalidName: bad name; InvalidArchive: bad archive (nothing is stored).
        """
        experiment_prefix(name)
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.scratch_dir) as tmp:
            _, root = unpack_experiment(stream, Path(tmp), self.max_archive_bytes)
            return self._publish(name, root, owner)

    def put_dir(self, name: str, folder: Path) -> bool:
        """Store an experiment folder as it is (used to seed the examples)."""
        experiment_prefix(name)
        files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        check_config(json.loads((folder / EXPERIMENT_FILE).read_text()), files)
        return self._publish(name, folder)

    def _publish(self, name: str, folder: Path, owner: str | None = None) -> bool:
        """Upload ``folder`` as a new version, then switch the pointer to it."""
        version = new_version()
        prefix = version_prefix(name, version)
        with self._guard:
            self._writing.add((name, version))
        try:
            stored = self.storage.upload_dir(folder, prefix)
            with self._locks[name]:
                is_new = not self._exists(name)
                if not is_new:
                    owner = self.owner(name)
                pointer = Pointer(version, len(stored), sum(i.size for i in stored), time.time(),
                                  owner)
                self.storage.put_bytes(experiment_prefix(name) + POINTER_FILE,
                                       json.dumps(asdict(pointer)).encode())
        finally:
            with self._guard:
                self._writing.discard((name, version))
        logger.info("stored: experiment %s version %s (%d files)", name, version, len(stored))
        if self.cache is not None:
            try:
                self.cache.seed(self.storage, name, version, prefix, folder, stored)
            except OSError as exc:  # the version is stored: its first run fetches it
                logger.warning("version cache: no copy of experiment %s version %s kept: %s",
                               name, version, exc)
        self.collect(name)
        return is_new

    def _exists(self, name: str) -> bool:
        try:
            self.resolve(name)
        except ExperimentNotFound:
            return False
        return True

    def delete(self, name: str) -> None:
        """Make the experiment vanish at once (its pointer goes first), then remove its
        files except the versions runs are fetching under a lease.

        Raises:
            ExperimentNotFound: no such experiment.
        """
        prefix = experiment_prefix(name)
        with self._locks[name]:
            if not self._exists(name):
                raise ExperimentNotFound(f"no experiment named {name!r}")
            self.storage.delete(prefix + POINTER_FILE)
            with self._guard:
                plain_leased = self._leases[(name, PLAIN_VERSION)] > 0
            if not plain_leased:
                for info in self.storage.list(prefix):
                    if not _is_layout_key(info.key[len(prefix):]):
                        self.storage.delete(info.key)
            self.collect(name, now=float("inf"))
        if self.cache is not None:
            self.cache.forget(self.storage, name)
        logger.info("deleted: experiment %s", name)

    # -- collection -------------------------------------------------------------

    def collect(self, name: str | None = None, *, now: float | None = None) -> int:
        """Delete the versions (and plain files) of ``name`` (all names if None) that no one
        can still be fetching; return how many objects went.

        A version goes when it is not current, not being written by this store, not
        leased, and ``grace`` seconds have passed since it was superseded (or, never
        current, since it was created). ``now=inf`` collects whatever is not leased or
        being written: at start-up, when no fetch or upload of this backend is in flight.

        Raises:
            StorageError: storage failed.
        """
        now = time.time() if now is None else now
        prefix = experiment_prefix(name) if name else PREFIX
        removed = 0
        for each, layout in _layouts(self.storage.list(prefix)).items():
            removed += self._collect_one(each, layout, now)
        return removed

    def _collect_one(self, name: str, layout: _Layout, now: float) -> int:
        """Collect one experiment's dead versions (see :meth:`collect`)."""
        pointer = self.pointer(name) if layout.pointer_present else None
        current = pointer.version if pointer else None
        since = pointer.switched_at if pointer else 0.0
        doomed: builtins.list[ObjectInfo] = []
        with self._guard:
            for version, infos in layout.versions.items():
                if version == current or (name, version) in self._writing \
                        or self._leases[(name, version)] > 0:
                    continue
                if now - max(since, _version_created(version)) > self.grace:
                    doomed.extend(infos)
            # Plain files beside a pointer are what the pointer replaced.
            if pointer and self._leases[(name, PLAIN_VERSION)] == 0 and now - since > self.grace:
                doomed.extend(layout.plain)
        for info in doomed:
            self.storage.delete(info.key)
        if doomed:
            logger.info("collected: %d objects of old versions of experiment %s",
                        len(doomed), name)
        return len(doomed)

    def start_collector(self, interval: float) -> threading.Thread:
        """Collect every ``interval`` seconds in a daemon thread (storage errors are logged)
        until :meth:`stop_collector`."""
        def run() -> None:
            while not self._collector_stopped.wait(interval):
                try:
                    self.collect()
                except StorageError as exc:
                    logger.warning("could not collect old experiment versions: %s", exc)

        thread = self._collector = threading.Thread(target=run, name="experiment-collector",
                                                    daemon=True)
        thread.start()
        return thread

    def stop_collector(self, timeout: float = 5.0) -> None:
        self._collector_stopped.set()
        if self._collector is not None:
            self._collector.join(timeout)


def _is_layout_key(path: str) -> bool:
    """A key of the versioned layout seen from an experiment's folder."""
    return path == POINTER_FILE or path.startswith(VERSIONS)


def seed_examples(store: ExperimentStore, examples_dir: Path) -> builtins.list[str]:
    """Put every example experiment that storage lacks into it."""
    present = {e["name"] for e in store.list()}
    added = []
    for folder in sorted(p.parent for p in examples_dir.glob(f"*/{EXPERIMENT_FILE}")):
        if folder.name not in present:
            store.put_dir(folder.name, folder)
            added.append(folder.name)
    return added


__all__ = ["PLAIN_VERSION", "ExperimentStore", "Pointer", "experiment_prefix", "seed_examples",
           "version_prefix"]
