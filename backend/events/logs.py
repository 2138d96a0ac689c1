"""A simulation's log files read as whole lines from a byte offset: by the pump, which
tails the run directory of every simulation someone follows, and by a stream catching up
from its cursor (from the run directory or, once uploaded, from storage)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from backend.run_files import iter_chunks
from lifecycle.messages import LOGS_DIR
from storage.tree import open_regular, scan

if TYPE_CHECKING:
    from backend.manager import SimulationManager

#: The most bytes of one log event; a longer line is cut in pieces of this size.
MAX_CHUNK = 64 * 1024
#: The most bytes the pump reads of one file at each look, so one chatty script cannot
#: hold up the others.
_READ_PER_LOOK = 4 * MAX_CHUNK


def whole_lines(data: bytes, final: bool) -> int:
    """How much of ``data`` to deliver now: up to its last newline; all of it when
    ``final`` (the file will not grow) or when it is one line longer than a chunk."""
    if final:
        return len(data)
    cut = data.rfind(b"\n") + 1
    return len(data) if cut == 0 and len(data) >= MAX_CHUNK else cut


def chunks(offset: int, data: bytes) -> Iterator[tuple[int, bytes]]:
    """``data`` (read at ``offset``) cut into pieces of at most :data:`MAX_CHUNK` bytes,
    at line ends where there is one."""
    while data:
        piece = data[:MAX_CHUNK]
        if len(data) > MAX_CHUNK and b"\n" in piece:
            piece = piece[:piece.rfind(b"\n") + 1]
        yield offset, piece
        offset, data = offset + len(piece), data[len(piece):]


class LogTail:
    """The pump's position in each log file of one run directory."""

    def __init__(self, run_dir: Path, max_files: int) -> None:
        self.folder = run_dir / LOGS_DIR
        self.max_files = max_files
        self.offsets: dict[str, int] = {}

    def skip_to_end(self) -> None:
        """Start from what the files hold now (streams catch up on the rest themselves)."""
        files = scan(self.folder, max_files=self.max_files).files
        self.offsets = {name: size for name, (_, size) in files.items()}

    def read(self) -> Iterator[tuple[str, int, bytes]]:
        """(file, offset, whole lines) of what was written since the last look."""
        for name, (_, size) in scan(self.folder, max_files=self.max_files).files.items():
            offset = self.offsets.setdefault(name, 0)
            if size <= offset:
                continue
            data = _read(self.folder, name, offset, min(size - offset, _READ_PER_LOOK))
            data = data[:whole_lines(data, final=False)]
            if data:
                self.offsets[name] = offset + len(data)
                yield from ((name, at, piece) for at, piece in chunks(offset, data))


def _read(folder: Path, name: str, offset: int, size: int) -> bytes:
    try:
        fd, _ = open_regular(folder, name)
    except OSError:
        return b""  # gone or replaced by something that is no regular file
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        return f.read(size)


def read_from(manager: SimulationManager, sim_id: str, name: str, offset: int,
              final: bool, limit: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) pieces of log ``name`` from ``offset`` (to ``offset + limit``):
    whole lines, and the last partial line too when ``final``."""
    opened, _ = manager.open_file(sim_id, LOGS_DIR, name, offset, limit)
    pending = b""
    for data in iter_chunks(opened):
        pending += data
        if len(pending) >= _READ_PER_LOOK:
            cut = whole_lines(pending, final=False) or len(pending)
            yield from chunks(offset, pending[:cut])
            offset, pending = offset + cut, pending[cut:]
    yield from chunks(offset, pending[:whole_lines(pending, final)])
