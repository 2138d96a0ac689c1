"""Write-then-rename for files, so readers never see a half-written file."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from storage.keys import TEMP_PREFIX

_TEMP_ATTEMPTS = 3


@contextlib.contextmanager
def atomic_write(path: Path, mode: int | None = None,
                 durable: bool = True) -> Iterator[BinaryIO]:
    """Yield a file that replaces `path` (creating parent folders) when the block ends.

    The data goes to a temp file beside `path`, is flushed and fsynced, then
    renamed over `path`; if the block raises, the temp file is removed and
    `path` is left as it was. ``mode`` sets the file's permissions (else the temp
    file's 0600). ``durable=False`` skips the fsync: readers still see the old or
    the new file, whole, but after a crash of the machine either may be gone; for
    files that only live processes read.

    Raises:
        OSError: if the folder cannot be created or the file written.
    """
    fd, temp_name = _create_temp(path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def _create_temp(directory: Path) -> tuple[int, str]:
    """Create a temp file in `directory`, creating the folder if needed.

    Retried because a concurrent delete prunes empty folders and may remove
    `directory` between the mkdir and the file's creation.
    """
    attempt = 1
    while True:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            return tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
        except FileNotFoundError:
            if attempt == _TEMP_ATTEMPTS:
                raise
            attempt += 1


def write_json_atomic(path: Path, data: Any, mode: int = 0o600, durable: bool = True) -> None:
    """Write ``data`` as compact JSON to ``path``; readers see the old or the new file, whole
    (``durable``: see :func:`atomic_write`).

    Raises:
        OSError: the folder cannot be created or the file written.
    """
    with atomic_write(Path(path), mode, durable) as file:
        file.write(json.dumps(data, separators=(",", ":")).encode())
