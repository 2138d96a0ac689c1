"""A simulation's logs and results as the API serves them: from its run directory while
it exists, from storage once uploaded.

The run directory belongs to the script, so nothing in it is trusted: only regular files
reached without following a link are listed or read (a link to ``/etc/passwd`` or to the
registry, a FIFO that would block the reading thread, ``/dev/zero``: none is served),
and walks never recurse (a script may nest folders thousands deep).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Iterator, NamedTuple

from backend.exceptions import InvalidName, NotFound
from backend.uploader import simulation_prefix
from storage import InvalidKey, ObjectNotFound, Storage, served_range, validate_key
from storage.tree import open_regular, scan

_CHUNK = 1 << 16


def list_local(folder: Path, max_files: int) -> list[dict[str, int | str]]:
    """The regular files below ``folder``, by name."""
    tree = scan(folder, max_files=max_files)
    return [{"name": name, "size": size} for name, (_, size) in sorted(tree.files.items())]


def list_stored(storage: Storage, sim_id: str, kind: str) -> list[dict[str, int | str]]:
    prefix = f"{simulation_prefix(sim_id)}{kind}/"
    return [{"name": i.key[len(prefix):], "size": i.size} for i in storage.list(prefix)]


def checked_name(name: str) -> str:
    """Raises: InvalidName: not a relative path of plain segments."""
    try:
        return validate_key(name)
    except InvalidKey as exc:
        raise InvalidName(str(exc)) from None


class OpenFile(NamedTuple):
    """A log or result file opened for a download, positioned at the offset asked for,
    and how many bytes of it are served: fixed when it is opened (a log written meanwhile
    is served up to there, as a Content-Length must say in advance). ``local``: a file
    of the run dir, which the WSGI server may send by itself; else a stored object's
    stream."""

    file: BinaryIO
    size: int
    local: bool = True


def open_local(folder: Path, name: str, offset: int, limit: int | None) -> OpenFile:
    """``[offset, offset + limit)`` of the regular file ``folder/name``.

    Raises:
        FileNotFoundError: missing, behind a link, or not a regular file.
    """
    fd, size = open_regular(folder, name)
    f = os.fdopen(fd, "rb")
    start, count = served_range(size, offset, limit)
    f.seek(start)  # past the end reads nothing
    return OpenFile(f, count)


def open_stored(storage: Storage, sim_id: str, kind: str, name: str, offset: int,
                limit: int | None) -> OpenFile:
    """Raises: NotFound."""
    try:
        opened = storage.open_sized(f"{simulation_prefix(sim_id)}{kind}/{name}", offset, limit)
    except ObjectNotFound:
        raise NotFound(f"simulation {sim_id} has no {kind} file {name!r}") from None
    return OpenFile(opened.stream, opened.size, local=False)


def iter_chunks(opened: OpenFile) -> Iterator[bytes]:
    """The chunks of what :func:`open_local` or :func:`open_stored` opened, up to its
    size (closed at the end)."""
    remaining = opened.size
    try:
        while remaining > 0 and (data := opened.file.read(min(remaining, _CHUNK))):
            remaining -= len(data)
            yield data
    finally:
        opened.file.close()
