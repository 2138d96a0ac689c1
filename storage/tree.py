"""Walking and removing local folder trees without recursion and without following links.

A script controls what its run directory holds: folders nested thousands deep (Python's
``os.walk``, ``Path.rglob`` and ``shutil.rmtree`` recurse and fail with RecursionError),
symbolic links to anywhere, FIFOs that block whoever opens them, devices. Everything
here walks with an explicit stack, looks at entries with ``lstat`` only, and takes
regular files alone.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from storage.keys import TEMP_PREFIX

#: How deep and how many files a scan takes by default before it stops.
MAX_DEPTH = 32
MAX_FILES = 10_000


@dataclass
class Tree:
    """What :func:`scan` found below a folder."""

    #: Relative path ('/'-separated) -> (absolute path, size), regular files only.
    files: dict[str, tuple[Path, int]] = field(default_factory=dict)
    #: Relative path -> why it was left out (a link, a FIFO, a device, too deep...).
    skipped: dict[str, str] = field(default_factory=dict)
    #: True when the scan stopped at ``max_files`` or left folders out for depth.
    truncated: bool = False


def _kind(mode: int) -> str | None:
    """Why an entry of this mode is not a file to take, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def scan(top: Path, *, max_depth: int = MAX_DEPTH, max_files: int = MAX_FILES,
         skip_temp: bool = True) -> Tree:
    """The regular files below ``top`` (none if it is missing or not a folder).

    Links are never followed. Folders deeper than ``max_depth`` and files beyond
    ``max_files`` are left out and said so in ``skipped``/``truncated``.
    """
    tree = Tree()
    stack: list[tuple[Path, str, int]] = [(Path(top), "", 0)]
    while stack:
        folder, prefix, depth = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            name = f"{prefix}{entry.name}"
            if skip_temp and entry.name.startswith(TEMP_PREFIX):
                continue
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue  # removed meanwhile
            if stat.S_ISDIR(mode):
                if depth + 1 > max_depth:
                    tree.skipped[name + "/"] = f"folders nested deeper than {max_depth}"
                    tree.truncated = True
                else:
                    stack.append((Path(entry.path), name + "/", depth + 1))
                continue
            why = _kind(mode)
            if why is not None:
                tree.skipped[name] = why
            elif len(tree.files) >= max_files:
                tree.truncated = True
                tree.skipped.setdefault("...", f"more than {max_files} files")
                return tree
            else:
                tree.files[name] = (Path(entry.path), entry.stat(follow_symlinks=False).st_size)
    return tree


def remove_tree(top: Path) -> None:
    """Remove ``top`` and everything below it, however deep; links are removed, never
    followed. Missing is fine; other errors are left for the caller to notice."""
    top = Path(top)
    try:
        if not stat.S_ISDIR(os.lstat(top).st_mode):
            top.unlink()
            return
    except FileNotFoundError:
        return
    stack, folders = [top], []
    while stack:
        folder = stack.pop()
        folders.append(folder)
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            else:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except FileNotFoundError:
            pass


def open_regular(top: Path, relative: str) -> tuple[int, int]:
    """Open ``top/relative`` for reading if it is a regular file reached without links.

    Returns ``(fd, size)``. The path is walked one component at a time with
    ``O_NOFOLLOW``, so no link on the way is followed, and the file is opened with
    ``O_NONBLOCK`` and checked with ``fstat``, so a FIFO or a device can neither block
    nor be read.

    Raises:
        FileNotFoundError: missing, a link, or not a regular file.
    """
    parts = relative.split("/")
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(top, flags | os.O_DIRECTORY)
    except OSError:
        raise FileNotFoundError(relative) from None
    try:
        for part in parts[:-1]:
            child = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        child = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
    except OSError:  # ELOOP for a link, ENOTDIR, ENOENT, ENXIO for a FIFO ...
        os.close(fd)
        raise FileNotFoundError(relative) from None
    os.close(fd)
    info = os.fstat(child)
    if not stat.S_ISREG(info.st_mode):
        os.close(child)
        raise FileNotFoundError(relative)
    return child, info.st_size


def read_regular(top: Path, relative: str, limit: int, *, tail: bool = False) -> bytes:
    """The first ``limit`` bytes of ``top/relative`` and one more if there are more (the
    last ``limit`` with ``tail``), opened as :func:`open_regular` opens it: a file a
    script may have replaced by a link or a FIFO never blocks nor leads elsewhere.

    Raises:
        FileNotFoundError: missing, a link, or not a regular file.
        OSError: it could not be read.
    """
    fd, size = open_regular(top, relative)
    with os.fdopen(fd, "rb") as f:
        if tail:
            f.seek(max(0, size - limit))
            return f.read(limit)
        return f.read(limit + 1)
