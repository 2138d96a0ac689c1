"""Checking and unpacking experiment archives (``.tar.gz`` of an experiment folder).

Entries are checked one by one as the stream is read, and reading stops at the first
problem, so what an upload costs is bounded by the caps, not by what it claims.
Nothing is stored unless the whole archive is acceptable: regular files and
folders only, no links or devices, no absolute paths, no ``..``, no control
characters, within the size limit, with a valid ``experiment.json``.
"""
from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from backend.exceptions import InvalidArchive, InvalidName, ScratchSpaceError
from storage import InvalidKey, validate_key

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_MEMBERS = 10_000
# Beyond the file bytes a tar stream holds a header per entry (two or three with a long
# name or pax data), padding to 512-byte blocks and an end marker padded to a record.
_TAR_OVERHEAD = 4096 * (_MAX_MEMBERS + 4)
#: CPU seconds one upload may spend decompressing and checking, so that no archive,
#: whatever its shape, holds a request thread for long.
MAX_UNPACK_CPU_SECONDS = 30.0
EXPERIMENT_FILE = "experiment.json"


def validate_name(name: str) -> str:
    """Return ``name`` if it can name an experiment.

    Raises:
        InvalidName: not a valid name.
    """
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidName(f"invalid experiment name {name!r}: use 1-128 letters, digits, "
                          "'.', '_' or '-', starting with a letter or digit, without '..'")
    return name


def check_config(data: Any, files: set[str]) -> dict[str, Any]:
    """Check a parsed ``experiment.json`` against the files it ships with.

    Raises:
        InvalidArchive: not an object, no ``main_script``, or the script is missing.
    """
    if not isinstance(data, dict):
        raise InvalidArchive(f"{EXPERIMENT_FILE} must hold a JSON object")
    script = data.get("main_script")
    if not isinstance(script, str) or not script:
        raise InvalidArchive(f"{EXPERIMENT_FILE} must name its 'main_script'")
    if script not in files:
        raise InvalidArchive(f"main_script {script!r} is not in the archive")
    return data


def _member_path(member: tarfile.TarInfo) -> str | None:
    """The member's path relative to the archive root; None for the root itself."""
    if member.issym() or member.islnk():
        raise InvalidArchive(f"{member.name!r}: links are not allowed")
    if not (member.isfile() or member.isdir()):
        raise InvalidArchive(f"{member.name!r}: only regular files and folders are allowed")
    name = member.name
    if name.startswith("/"):
        raise InvalidArchive(f"{name!r}: absolute paths are not allowed")
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if name in ("", "."):
        return None
    try:
        return validate_key(name)
    except InvalidKey as exc:
        raise InvalidArchive(f"{member.name!r}: {exc}") from None


class _BoundedReader:
    """The decompressed body, read through gzip, with a budget of bytes and CPU time.

    tarfile only reads as far as the end-of-archive marker, but gzip checks the CRC and
    length in its trailer only at EOF: :meth:`drain` reads the rest so a corrupt or cut
    stream is refused. The budgets bound what one upload can cost whatever its headers
    claim (a gzip bomb, millions of empty entries).
    """

    def __init__(self, raw: BinaryIO, max_bytes: int) -> None:
        self._gzip = gzip.GzipFile(fileobj=raw, mode="rb")
        self._left = max_bytes
        self._max_bytes = max_bytes
        # thread_time: the CPU this request thread spends, not the whole process's.
        self._cpu_deadline = time.thread_time() + MAX_UNPACK_CPU_SECONDS

    def read(self, size: int = -1) -> bytes:
        data = self._gzip.read(min(size, self._left + 1) if size >= 0 else self._left + 1)
        self._left -= len(data)
        if self._left < 0:
            raise InvalidArchive(f"the archive decompresses to more than {self._max_bytes} bytes")
        if time.thread_time() > self._cpu_deadline:
            raise InvalidArchive(f"the archive took more than {MAX_UNPACK_CPU_SECONDS} s of CPU "
                                 "to unpack")
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _extract_members(tar: tarfile.TarFile, dest: Path, max_bytes: int) -> set[str]:
    """Check each entry as it streams by and write the files below ``dest``.

    Returns the file paths. Checking one entry at a time keeps the cost of an archive
    of countless entries at the cap, not at the archive's size.

    Raises:
        InvalidArchive: a bad, duplicate or conflicting entry, too many entries or bytes.
    """
    files: set[str] = set()
    folders: set[str] = set()
    total = 0
    for count, member in enumerate(tar, start=1):
        if count > _MAX_MEMBERS:
            raise InvalidArchive(f"the archive has more than {_MAX_MEMBERS} entries")
        path = _member_path(member)
        if path is None or member.isdir():
            continue
        parents = {path.rsplit("/", i)[0] for i in range(1, path.count("/") + 1)}
        if path in files or path in folders or parents & files:
            raise InvalidArchive(f"{path!r} appears twice in the archive, or as file and folder")
        total += member.size
        if total > max_bytes:
            raise InvalidArchive(f"the archive unpacks to more than {max_bytes} bytes")
        files.add(path)
        folders |= parents
        _write_member(tar, member, dest / path)
    return files


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    """Copy one file entry to ``target``.

    Raises:
        ScratchSpaceError: the backend could not write its scratch copy.
    """
    source = tar.extractfile(member)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(target, "wb")  # noqa: SIM115 - closed below; read errors must pass through
    except OSError:
        logger.exception("cannot write %s", target)
        raise ScratchSpaceError("the backend could not unpack the archive; details are in "
                                "its log") from None
    with source, out:
        while chunk := source.read(1 << 20):
            try:
                out.write(chunk)
            except OSError:
                logger.exception("cannot write %s", target)
                raise ScratchSpaceError("the backend could not unpack the archive; details "
                                        "are in its log") from None


def _experiment_root(files: set[str]) -> str:
    """Accept ``tar czf x.tgz myexp/`` as well as ``tar czf x.tgz -C myexp .``: return
    the folder (``''`` or ``'myexp/'``) holding ``experiment.json``."""
    if EXPERIMENT_FILE in files:
        return ""
    tops = {path.split("/", 1)[0] for path in files}
    if len(tops) == 1:
        top = tops.pop()
        if f"{top}/{EXPERIMENT_FILE}" in files:
            return f"{top}/"
    raise InvalidArchive(f"the archive has no {EXPERIMENT_FILE} at its root")


def unpack_experiment(stream: BinaryIO, dest: Path, max_bytes: int) -> tuple[dict[str, Any], Path]:
    """Check the archive in ``stream`` and unpack it into the empty folder ``dest``.

    Returns the parsed ``experiment.json`` and the folder below ``dest`` that holds it.
    Error messages name archive entries only, never a path of the backend's.

    Raises:
        InvalidArchive: anything wrong with the archive (``dest`` is then left empty).
        ScratchSpaceError: the backend could not write below ``dest``.
    """
    body = _BoundedReader(stream, max_bytes + _TAR_OVERHEAD)
    try:
        with tarfile.open(fileobj=body, mode="r|") as tar:
            files = _extract_members(tar, dest, max_bytes)
        body.drain()
        root = _experiment_root(files)
        config = _read_config(dest / root)
        check_config(config, {path[len(root):] for path in files if path.startswith(root)})
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        _empty(dest)
        raise InvalidArchive("the body is not a complete, intact gzip-compressed tar archive "
                             f"({_reason(exc)})") from None
    except (InvalidArchive, ScratchSpaceError):
        _empty(dest)
        raise
    return config, dest / root


def _read_config(root: Path) -> Any:
    try:
        return json.loads((root / EXPERIMENT_FILE).read_bytes())
    except ValueError as exc:
        raise InvalidArchive(f"{EXPERIMENT_FILE} is not valid JSON: {exc}") from None


def _reason(exc: BaseException) -> str:
    """What went wrong reading the stream, without a file name (ours are scratch paths)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
