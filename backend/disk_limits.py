"""Disk limits of a run: its log files are cut to a cap, its results folder measured.

The server's ``stdout.log``/``stderr.log`` are plain files the launcher opened with
``O_APPEND``: the server, the script and anything the script starts write to the
same descriptors, and whatever was written is on disk even if the server is killed
with SIGKILL. So the cap is kept from outside, on the file, by the watchdog while
the run lives (a few times a second) and by the uploader once it has ended (when no
writer is left, exactly): over the cap, the head is cut, the tail kept from the
start of a line, behind a marker that counts every byte cut so far.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from backend.limits import MIB
from storage.tree import scan

_MARKER = "[simbackend: {cut} bytes cut from the head of this log, over its cap of {cap}]\n"
_MARKER_RE = re.compile(rb"\[simbackend: (\d+) bytes cut from the head of this log[^\n]*\n")
# Room left for the marker when the tail is sized to fit the cap.
_MARKER_ROOM = 128
# Rounds of moving up what writers appended during a cut; a writer that outruns them
# all loses what it wrote in the last one (counted in the marker all the same).
_CATCH_UP = 64


def cap_log(path: Path, cap: int, keep: int | None = None) -> int:
    """Cut the head of ``path`` if it is over ``cap`` bytes; return the bytes cut now.

    ``keep``: the tail kept (default: as much as fits in ``cap`` with the marker).
    Writers may go on appending (``O_APPEND``) meanwhile: the marker and the tail are
    written over the head in place, what was appended since is moved up behind them
    until the size holds still, and only then is the file truncated to its new end.
    So the marker stays first and the order holds; only what lands between the last
    look at the size and the truncation (microseconds) can be lost, none once the run
    has ended.
    """
    if cap <= 0:
        return 0
    try:
        # Not O_APPEND: pwrite must write where it is told. Never through a link nor
        # into anything but a regular file: the script may swap one in after a look.
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return 0
    try:
        info = os.fstat(fd)
        size = info.st_size
        if size <= cap or not stat.S_ISREG(info.st_mode):
            return 0
        earlier = _cut_before(os.pread(fd, 256, 0))
        start = size - max(0, min(keep or cap, cap) - _MARKER_ROOM)
        tail = _read_from(fd, start, size)
        newline = tail.find(b"\n")
        if 0 <= newline < len(tail) - 1:
            start, tail = start + newline + 1, tail[newline + 1:]
        cut = start - (_marker_length(earlier, cap) if earlier is not None else 0)
        marker = _MARKER.format(cut=(earlier or 0) + cut, cap=cap).encode()
        end, read = _write_at(fd, marker + tail, 0), size
        for _ in range(_CATCH_UP):  # appended meanwhile: move it up behind
            now = os.fstat(fd).st_size
            if now <= read:
                break
            end += _write_at(fd, _read_from(fd, read, now), end)
            read = now
        last = os.fstat(fd).st_size
        os.ftruncate(fd, end)
        if last > read:  # a writer outran every round: what it wrote since is gone, counted
            cut += last - read
            _recount(fd, marker, (earlier or 0) + cut, cap)
    finally:
        os.close(fd)
    return cut


def _recount(fd: int, marker: bytes, cut: int, cap: int) -> None:
    """Write the marker again with the new count, where it fits in the old one's place
    (the same number of digits: almost always)."""
    again = _MARKER.format(cut=cut, cap=cap).encode()
    if len(again) == len(marker):
        _write_at(fd, again, 0)


def _read_from(fd: int, start: int, end: int) -> bytes:
    parts, offset = [], start
    while offset < end and (part := os.pread(fd, end - offset, offset)):
        parts.append(part)
        offset += len(part)
    return b"".join(parts)


def _write_at(fd: int, data: bytes, offset: int) -> int:
    view, done = memoryview(data), 0
    while done < len(data):
        done += os.pwrite(fd, view[done:], offset + done)
    return done


def cap_logs(folder: Path, cap: int, keep: int | None = None) -> int:
    """:func:`cap_log` every file of ``folder``; the bytes cut now."""
    if cap <= 0:
        return 0
    try:
        paths = [p for p in folder.iterdir() if p.is_file() and not p.is_symlink()]
    except OSError:
        return 0
    return sum(cap_log(path, cap, keep) for path in paths)


def folder_size(folder: Path) -> int:
    """Bytes in the regular files below ``folder`` (links not followed; within the
    depth and count a walk of results takes)."""
    return sum(size for _, size in scan(folder).files.values())


def results_breach(size: int, cap: int) -> dict[str, Any] | None:
    """The ``results_limit`` error of a results folder of ``size`` bytes, or None."""
    if cap <= 0 or size <= cap:
        return None
    return {"type": "results_limit", "results_bytes": size, "limit_bytes": cap,
            "message": f"the script wrote {size / MIB:.1f} MiB of results, over the limit "
                       f"of {cap / MIB:.1f} MiB (--max-results-bytes)"}


def _cut_before(head: bytes) -> int | None:
    """Bytes an earlier cut removed, from the marker at the head; None if none."""
    match = _MARKER_RE.match(head)
    return int(match.group(1)) if match else None


def _marker_length(cut: int, cap: int) -> int:
    return len(_MARKER.format(cut=cut, cap=cap).encode())
