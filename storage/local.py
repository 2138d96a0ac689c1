"""LocalStorage: objects as files below one folder, the embedded default."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from storage.atomic import atomic_write
from storage.base import ObjectInfo, Opened, Storage, check_range, served_range
from storage.errors import InvalidKey, ObjectNotFound, StorageError, StorageUnavailable
from storage.keys import MAX_KEY_BYTES, TEMP_PREFIX, validate_key, validate_prefix
from storage.tree import scan
from storage.streams import exact_size, read_range

logger = logging.getLogger(__name__)


class LocalStorage(Storage):
    """Objects stored as files below `root`: the key ``a/b.txt`` is ``root/a/b.txt``.

    Writes go to a temp file and are renamed into place, so readers never see
    partial objects. A key that resolves outside `root` (through a symlink) is
    refused. Because a key is a path, ``a`` and ``a/b`` cannot both exist.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    def describe(self) -> str:
        return self.root.as_uri()

    def check(self) -> None:
        """Create the root if needed and prove it writable by writing a probe file.

        Raises:
            StorageUnavailable: if the root cannot be created or written.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(prefix=TEMP_PREFIX, dir=self.root) as probe:
                probe.write(b"probe")
                probe.flush()
        except OSError as exc:
            # The message reaches /ready, which anyone may ask: the reason, not the path.
            raise StorageUnavailable("the storage folder is not writable: "
                                     f"{exc.strerror or type(exc).__name__}") from exc

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        folder = validate_prefix(prefix)
        top = self._path(folder[:-1], kind="prefix") if folder else self.root
        if not top.is_dir():
            return []
        with self._os_errors("list", folder):
            infos = [info for info in map(self._info, self._walk(top)) if info is not None]
        return sorted(infos, key=lambda info: info.key)

    def stat(self, key: str) -> ObjectInfo:
        return ObjectInfo(key, self._file_size(self._path(key), key))

    def open_sized(self, key: str, offset: int = 0, length: int | None = None) -> Opened:
        path = self._path(key)
        check_range(offset, length)
        self._file_size(path, key)  # ObjectNotFound for a missing file or a folder
        with self._os_errors("read", key):
            file = open(path, "rb")  # noqa: SIM115 - the caller closes the stream
        # The size of what was opened: a write replaces the file, never changes it.
        size = os.fstat(file.fileno()).st_size
        # Past the end reads nothing; seeking there may fail (past the largest file size).
        start, count = served_range(size, offset, length)
        file.seek(start)
        return Opened(file if length is None else read_range(file, length), count)

    def put_stream(self, key: str, stream: BinaryIO, size: int | None = None) -> None:
        path = self._path(key)
        with self._os_errors("write", key), atomic_write(path) as target:
            shutil.copyfileobj(exact_size(stream, size), target)
        logger.debug("uploaded: %s to %s", key, self.describe())

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return  # not an object: nothing to delete
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r} in {self.describe()}: {exc}") from exc
        logger.debug("deleted: %s from %s", key, self.describe())
        self._prune_empty_folders(path.parent)

    def remove_stale_temp_files(self, older_than: float) -> int:
        """Remove the ``.tmp-*`` files below the root not written for `older_than` seconds.

        A write in progress touches its temp file at every chunk, so a temp file quiet
        for that long belongs to a process that died mid-write (kill -9, power loss).

        Raises:
            StorageError: if the folder cannot be walked.
        """
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than
        removed = 0
        everything = scan(self.root, max_depth=MAX_KEY_BYTES, max_files=sys.maxsize,
                          skip_temp=False)
        for path, _ in everything.files.values():
            try:
                if path.name.startswith(TEMP_PREFIX) and path.lstat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # finished (renamed) or removed meanwhile
            except OSError as exc:
                raise StorageError(f"cannot remove temp file {path}: {exc}") from exc
        if removed:
            logger.info("removed: %d stale temp files in %s", removed, self.describe())
        return removed

    def _path(self, key: str, *, kind: str = "key") -> Path:
        """Return the file path of a key.

        Raises:
            InvalidKey: if the key is invalid or resolves outside the root.
        """
        path = self.root / validate_key(key)
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise InvalidKey(key, f"resolves outside the storage folder {self.root}", kind=kind)
        return path

    def _file_size(self, path: Path, key: str) -> int:
        """Return the size of the regular file holding `key`.

        Raises:
            ObjectNotFound: if there is none (missing, or a folder).
        """
        with self._os_errors("stat", key):
            st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(key, self.describe())
        return st.st_size

    def _walk(self, top: Path) -> Iterator[Path]:
        """Yield the regular, non-temp, non-symlink files below `top` (any depth)."""
        for path, _ in scan(top, max_depth=MAX_KEY_BYTES, max_files=sys.maxsize).files.values():
            yield path

    def _info(self, path: Path) -> ObjectInfo | None:
        """Return the info of a listed file, or None if it vanished or its name is no valid key."""
        key = path.relative_to(self.root).as_posix()
        try:
            validate_key(key)
            return ObjectInfo(key, path.stat().st_size)
        except InvalidKey:
            logger.warning("skipping %s in %s: not a valid key", path, self.describe())
        except FileNotFoundError:
            pass  # deleted while listing
        return None

    def _prune_empty_folders(self, folder: Path) -> None:
        """Remove `folder` and its parents up to the root while they are empty."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return  # not empty, or already gone
            folder = folder.parent

    @contextlib.contextmanager
    def _os_errors(self, action: str, key: str) -> Iterator[None]:
        """Translate OSError into the storage errors.

        Raises:
            ObjectNotFound: for a missing file.
            StorageError: for any other OSError.
        """
        try:
            yield
        except (FileNotFoundError, NotADirectoryError) as exc:
            if action in ("stat", "read"):
                raise ObjectNotFound(key, self.describe()) from exc
            raise StorageError(f"cannot {action} {key!r} in {self.describe()}: {exc}") from exc
        except OSError as exc:
            raise StorageError(f"cannot {action} {key!r} in {self.describe()}: {exc}") from exc
