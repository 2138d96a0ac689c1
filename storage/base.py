"""The one storage interface every backend implements.

Subclasses implement the primitives (describe, check, list, stat, open_sized,
put_stream, delete); the base derives the rest — byte helpers, file transfers,
prefix deletion and the parallel, verified folder transfers — and subclasses
override those only to be faster.
"""

from __future__ import annotations

import abc
import builtins  # `list` is a method of Storage, so annotations in the class use builtins.list
import io
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, NamedTuple

from storage.atomic import atomic_write
from storage.errors import ObjectNotFound, StorageError
from storage.keys import validate_key, validate_prefix
from storage.tree import MAX_DEPTH, MAX_FILES, scan

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectInfo:
    """A stored object: its full key (relative to the storage root) and size in bytes."""

    key: str
    size: int


class Opened(NamedTuple):
    """A stream of part of an object, and how many bytes it holds (as the storage said
    when it was opened: a client can be told the length in advance)."""

    stream: BinaryIO
    size: int


def check_range(offset: int, length: int | None) -> None:
    """Reject a negative byte range.

    Raises:
        ValueError: if `offset` or `length` is negative.
    """
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"byte range must not be negative: offset={offset}, length={length}")


def served_range(size: int, offset: int, length: int | None) -> tuple[int, int]:
    """Where ``[offset, offset + length)`` (to the end if None) of ``size`` bytes starts
    and how many bytes it holds: an offset at or past the end holds none."""
    start = min(offset, size)
    return start, size - start if length is None else min(length, size - start)


class Storage(abc.ABC):
    """A flat namespace of objects addressed by '/'-separated keys.

    Every method validates its keys before any I/O. Prefixes name folders:
    ``'a/b'`` and ``'a/b/'`` both mean everything under ``a/b/``.
    All methods are safe to call from many threads.
    """

    #: Threads of :meth:`upload_dir` and :meth:`download_prefix` unless told otherwise.
    transfer_workers = 8

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    @abc.abstractmethod
    def describe(self) -> str:
        """Return a URL naming this storage, e.g. ``file:///srv/store`` or ``s3://bucket/prefix``."""

    @abc.abstractmethod
    def check(self) -> None:
        """Probe that the storage is reachable and usable (the readiness check).

        Raises:
            StorageUnavailable: with a message saying what is wrong.
        """

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Return every object under `prefix`, recursively, sorted by key; [] if none.

        Raises:
            InvalidKey: for a bad prefix.
            StorageUnavailable: if the storage cannot be reached.
        """

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Return the object's info.

        Raises:
            InvalidKey, ObjectNotFound, StorageUnavailable.
        """

    @abc.abstractmethod
    def open_sized(self, key: str, offset: int = 0, length: int | None = None) -> Opened:
        """Open a stream of `length` bytes (all if None) from `offset`, with how many
        bytes it holds; the caller closes it.

        An offset at or past the end gives an empty stream.

        Raises:
            InvalidKey, ObjectNotFound, StorageUnavailable; ValueError for a negative range.
        """

    def open_read(self, key: str, offset: int = 0, length: int | None = None) -> BinaryIO:
        """:meth:`open_sized`'s stream alone."""
        return self.open_sized(key, offset, length).stream

    @abc.abstractmethod
    def put_stream(self, key: str, stream: BinaryIO, size: int | None = None) -> None:
        """Store everything `stream` yields under `key`, replacing any object there.

        Readers see the old object or the new one, never a partial one. If `size`
        is given the stream must hold exactly that many bytes, else nothing is stored.

        Raises:
            InvalidKey, StorageUnavailable; StorageError if `size` does not match.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object; a missing object is not an error.

        Raises:
            InvalidKey, StorageUnavailable.
        """

    def remove_stale_temp_files(self, older_than: float) -> int:
        """Remove temp files of writes that died (a killed process) and were last written
        more than `older_than` seconds ago; return how many went.

        A backend whose writes are atomic on the server side (S3) leaves none.

        Raises:
            StorageError: if the storage cannot be swept.
        """
        return 0

    def exists(self, key: str) -> bool:
        """Return whether an object is stored under `key`.

        Raises:
            InvalidKey, StorageUnavailable.
        """
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def read_bytes(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return `length` bytes (all if None) of the object from `offset`.

        Raises:
            InvalidKey, ObjectNotFound, StorageUnavailable; ValueError for a negative range.
        """
        with self.open_read(key, offset, length) as stream:
            return stream.read()

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key`.

        Raises:
            InvalidKey, StorageUnavailable.
        """
        self.put_stream(key, io.BytesIO(data), size=len(data))

    def upload_file(self, path: Path, key: str) -> None:
        """Store the local file at `path` under `key`.

        Raises:
            InvalidKey, StorageUnavailable; OSError if `path` cannot be read.
        """
        validate_key(key)
        with open(path, "rb") as file:
            self.put_stream(key, file, size=os.fstat(file.fileno()).st_size)

    def download_file(self, key: str, path: Path) -> None:
        """Write the object to `path` atomically, creating parent folders.

        Raises:
            InvalidKey, ObjectNotFound, StorageUnavailable; OSError if `path` cannot be written.
        """
        validate_key(key)
        with self.open_read(key) as source, atomic_write(Path(path)) as target:
            shutil.copyfileobj(source, target)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix` and return how many there were.

        Raises:
            InvalidKey, StorageUnavailable.
        """
        folder = validate_prefix(prefix)
        infos = self.list(folder)
        for info in infos:
            self.delete(info.key)
        logger.info("deleted: %d objects under %s/%s", len(infos), self.describe(), folder)
        return len(infos)

    def upload_dir(
        self,
        local_dir: Path,
        prefix: str,
        *,
        workers: int | None = None,
        max_depth: int = MAX_DEPTH,
        max_files: int = MAX_FILES,
    ) -> builtins.list[ObjectInfo]:
        """Upload every regular file below `local_dir` to `prefix` + its relative path.

        Links, FIFOs and devices are skipped, and so is what lies beyond `max_depth`
        folders or `max_files` files (see :func:`storage.tree.scan`, which tells what
        was left out). Objects already under `prefix` are kept. After the uploads the
        prefix is listed and each size compared with the local file.

        Raises:
            InvalidKey: if a file's name makes an invalid key (before any upload).
            StorageError: if `local_dir` is not a folder, or naming the keys that
                failed verification.
            StorageUnavailable: if the storage cannot be reached.
        """
        folder = validate_prefix(prefix)
        workers = self._workers(workers)
        files = _local_files(Path(local_dir), folder, max_depth, max_files)
        _run_parallel(
            [partial(self.upload_file, path, key) for key, (path, _) in files.items()], workers
        )
        stored = {info.key: info.size for info in self.list(folder)}
        mismatched = sorted(key for key, (_, size) in files.items() if stored.get(key) != size)
        if mismatched:
            raise StorageError(
                f"upload of {local_dir} to {self.describe()} failed verification: "
                f"{', '.join(mismatched)}"
            )
        logger.info(
            "uploaded: %d files from %s to %s/%s", len(files), local_dir, self.describe(), folder
        )
        return [ObjectInfo(key, stored[key]) for key in sorted(files)]

    def download_prefix(
        self, prefix: str, local_dir: Path, *, workers: int | None = None
    ) -> builtins.list[ObjectInfo]:
        """Download every object under `prefix` to `local_dir` / its key less the prefix.

        Each file is written atomically and its size checked against the listing.

        Raises:
            InvalidKey: for a bad prefix.
            StorageError: if a key would land outside `local_dir`, or naming the
                files whose size differs from the listing.
            StorageUnavailable: if the storage cannot be reached.
        """
        folder = validate_prefix(prefix)
        workers = self._workers(workers)
        local_dir = Path(local_dir)
        infos = self.list(folder)
        targets = {info.key: _local_target(local_dir, info.key[len(folder) :]) for info in infos}
        _run_parallel(
            [partial(self.download_file, key, path) for key, path in targets.items()], workers
        )
        mismatched = [info.key for info in infos if targets[info.key].stat().st_size != info.size]
        if mismatched:
            raise StorageError(
                f"download from {self.describe()} to {local_dir} is incomplete: "
                f"{', '.join(mismatched)}"
            )
        logger.info(
            "downloaded: %d files from %s/%s to %s", len(infos), self.describe(), folder, local_dir
        )
        return infos

    def _workers(self, workers: int | None) -> int:
        """Return `workers`, or :attr:`transfer_workers` for None.

        Raises:
            ValueError: if `workers` is below 1.
        """
        workers = self.transfer_workers if workers is None else workers
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        return workers


def _local_files(local_dir: Path, folder: str, max_depth: int = MAX_DEPTH,
                 max_files: int = MAX_FILES) -> dict[str, tuple[Path, int]]:
    """Map each key to upload to its regular file below `local_dir` and that file's size
    (no links, FIFOs or devices; within the depth and count of :func:`storage.tree.scan`).

    Raises:
        StorageError: if `local_dir` is not a folder.
        InvalidKey: if a relative path does not make a valid key.
    """
    if not local_dir.is_dir():
        raise StorageError(f"cannot upload {local_dir}: not a folder")
    tree = scan(local_dir, max_depth=max_depth, max_files=max_files, skip_temp=False)
    return {validate_key(folder + name): found for name, found in tree.files.items()}


def _local_target(local_dir: Path, relative: str) -> Path:
    """Return where `relative` lands below `local_dir`.

    Raises:
        StorageError: if it would land outside `local_dir` (a '..' or a symlink on the way).
    """
    validate_key(relative)
    target = local_dir / relative
    if not target.resolve().is_relative_to(local_dir.resolve()):
        raise StorageError(f"refusing to write {relative!r} outside {local_dir}")
    return target


def _run_parallel(calls: list[Callable[[], object]], workers: int) -> None:
    """Run `calls` on `workers` threads; after the first failure start no more, then re-raise it.

    Raises:
        Whatever a call raised.
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="storage") as pool:
        futures = [pool.submit(call) for call in calls]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
    for future in futures:
        if not future.cancelled():
            future.result()
