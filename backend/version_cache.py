"""Local copies of the experiment versions runs fetched, so that the next run of the same
version copies its files from this host's disk instead of fetching them from storage.

A stored version never changes (replacing an experiment writes a new version, see
:mod:`backend.experiments`), so a copy, once whole, stays right; the plain layout's files
can change in place and are always fetched. A copy is downloaded into a folder of its
own, its sizes checked against the listing and every file synced, then renamed into
place: a copy cut short (a crash, a storage outage) is never used, and is removed at the
next start. Storage still says which version is current: a run never gets a version
other than the one a fetch from storage would have given it.

A version just stored by this backend is kept from the files it uploaded
(:meth:`VersionCache.seed`), checked against the sizes storage listed and synced the
same way, so that its first run (the next one after an upload, most often) does not
fetch back what it sent.

Layout: ``<root>/<storage>/<experiment>/<version>/``, ``<storage>`` and ``<version>``
hashed. Filling a version removes the experiment's other versions no run is copying
from (new runs fetch the current one only); :meth:`VersionCache.forget` removes an
experiment's copies (it was deleted), and the copies are bounded to ``max_bytes``, the
least recently used going first.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from storage import ObjectInfo, Storage, atomic_write, validate_key

logger = logging.getLogger(__name__)

#: Prefix of a copy being made: never read, removed at start.
_FILLING = ".filling-"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class VersionCache:
    """Copies of experiment versions under ``root``, at most ``max_bytes`` in all."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._in_use: Counter[Path] = Counter()
        for leftover in root.glob(f"*/*/{_FILLING}*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def fetch(self, storage: Storage, name: str, version: str, prefix: str,
              dest: Path) -> int:
        """Put the files of ``name``'s ``version`` (stored under ``prefix``) into
        ``dest``, from the local copy, made first if there is none; how many files.

        Raises:
            StorageError: the download failed (nothing is kept of it).
            OSError: ``dest`` or the copy could not be written.
        """
        entry = self._experiment(storage, name) / _digest(version)
        with self._using(entry):
            if entry.is_dir():
                os.utime(entry)  # recently used
            elif not self._fill(storage, prefix, entry):
                return 0
            return _copy_tree(entry, dest)

    def seed(self, storage: Storage, name: str, version: str, prefix: str, folder: Path,
             stored: list[ObjectInfo]) -> bool:
        """Keep a copy of ``name``'s ``version``, just uploaded from ``folder`` to
        ``prefix`` (``stored``: what storage listed after the upload), unless there is
        one; whether one was made. Nothing is kept if a file in ``folder`` is no longer
        the size storage has (it changed since the upload).

        Raises:
            OSError: the copy could not be written (nothing is kept of it).
        """
        files = {info.key[len(prefix):]: info.size for info in stored
                 if info.key.startswith(prefix)}
        entry = self._experiment(storage, name) / _digest(version)

        def copy(filling: Path) -> bool:
            for path, size in files.items():
                source = folder / path
                with source.open("rb") as src, atomic_write(filling / path) as out:
                    shutil.copyfileobj(src, out)
                if (filling / path).stat().st_size != size:
                    logger.warning("version cache: %s changed since its upload; version %s "
                                   "of %s is fetched from storage instead", source, version,
                                   name)
                    return False
            return True

        with self._using(entry):
            return not entry.is_dir() and self._make(entry, copy)

    def read(self, storage: Storage, name: str, version: str, path: str) -> bytes | None:
        """The file ``path`` of the copy of ``name``'s ``version``; None if there is no
        copy.

        Raises:
            InvalidKey: ``path`` is no valid key; FileNotFoundError: the copy has no
                such file (nor has the version, then).
        """
        entry = self._experiment(storage, name) / _digest(version)
        target = entry / validate_key(path)
        with self._using(entry):
            if not entry.is_dir():
                return None
            return target.read_bytes()

    def has(self, storage: Storage, name: str, version: str, path: str) -> bool | None:
        """Whether the copy of ``name``'s ``version`` has the file ``path``; None if
        there is no copy.

        Raises:
            InvalidKey: ``path`` is no valid key.
        """
        entry = self._experiment(storage, name) / _digest(version)
        target = entry / validate_key(path)
        with self._using(entry):
            return target.is_file() if entry.is_dir() else None

    def forget(self, storage: Storage, name: str) -> None:
        """Remove every copy of ``name``'s versions no run is copying from (deleted)."""
        self._drop(self._experiment(storage, name), keep=None)

    def _experiment(self, storage: Storage, name: str) -> Path:
        # Names are validated (one path component); the storage is hashed so that a
        # backend moved to another bucket never mixes the two.
        return self.root / _digest(storage.describe()) / name

    @contextmanager
    def _using(self, entry: Path) -> Iterator[None]:
        with self._lock:
            self._in_use[entry] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_use[entry] -= 1
                if self._in_use[entry] <= 0:
                    del self._in_use[entry]

    def _fill(self, storage: Storage, prefix: str, entry: Path) -> bool:
        """Download the version into a folder of its own, then rename it into place;
        False when storage holds no file under ``prefix``."""
        return self._make(entry, lambda filling: bool(storage.download_prefix(prefix, filling)))

    def _make(self, entry: Path, write: Callable[[Path], bool]) -> bool:
        """Let ``write`` fill a folder of its own (every file synced), then rename it into
        place as ``entry``; False (nothing kept) if ``write`` says so."""
        entry.parent.mkdir(parents=True, exist_ok=True)
        filling = Path(tempfile.mkdtemp(prefix=_FILLING, dir=entry.parent))
        try:
            if not write(filling):
                return False
            try:
                filling.rename(entry)
            except OSError:
                if not entry.is_dir():
                    raise
                # Another fill of the same version won the race: the same files.
        finally:
            shutil.rmtree(filling, ignore_errors=True)
        self._drop(entry.parent, keep=entry)
        self._bound()
        return True

    def _drop(self, experiment: Path, keep: Path | None) -> None:
        """Remove the copies of one experiment but ``keep`` and those in use."""
        try:
            versions = [p for p in experiment.iterdir() if not p.name.startswith(_FILLING)]
        except OSError:
            return
        for version in versions:
            if version != keep and not self._busy(version):
                shutil.rmtree(version, ignore_errors=True)

    def _bound(self) -> None:
        """Remove the least recently used copies until all fit in ``max_bytes``."""
        entries = [(e.stat().st_mtime, _size(e), e) for e in self.root.glob("*/*/*")
                   if not e.name.startswith(_FILLING)]
        total = sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                return
            if not self._busy(entry):
                logger.info("version cache: removing %s (%d bytes; over %d in all)",
                            entry, size, self.max_bytes)
                shutil.rmtree(entry, ignore_errors=True)
                total -= size

    def _busy(self, entry: Path) -> bool:
        with self._lock:
            return entry in self._in_use


def _copy_tree(source: Path, dest: Path) -> int:
    """Copy the files under ``source`` to the same places under ``dest``; how many."""
    copied = 0
    for folder, _, files in os.walk(source):
        target = dest / Path(folder).relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copyfile(Path(folder) / file, target / file)
            copied += 1
    return copied


def _size(entry: Path) -> int:
    total = 0
    for folder, _, files in os.walk(entry):
        for file in files:
            try:
                total += (Path(folder) / file).stat().st_size
            except OSError:
                continue
    return total
