"""Checking and unpacking experiment archives (``.tar.gz`` of an experiment folder).

Nothing is written unless the whole archive is acceptable: regular files and
folders only, no links or devices, no absolute paths, no ``..``, no control
characters, within the size limit, with a valid ``experiment.json``.
"""
from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

from backend.errors import BadRequest, InvalidArchive
from storage import InvalidKey, validate_key

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_MEMBERS = 10_000
EXPERIMENT_FILE = "experiment.json"


def validate_name(name: str) -> str:
    """Return ``name`` if it can name an experiment.

    Raises:
        BadRequest: ``invalid_name``.
    """
    if not _NAME.fullmatch(name) or ".." in name:
        raise BadRequest(f"invalid experiment name {name!r}: use 1-128 letters, digits, "
                         "'.', '_' or '-', starting with a letter or digit, without '..'",
                         code="invalid_name")
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


def _read_members(stream: BinaryIO, max_bytes: int) -> tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]:
    try:
        tar = tarfile.open(fileobj=stream, mode="r:gz")
        members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidArchive(f"the body is not a gzip-compressed tar archive ({exc})") from None
    if len(members) > _MAX_MEMBERS:
        raise InvalidArchive(f"the archive has more than {_MAX_MEMBERS} entries")
    files: dict[str, tarfile.TarInfo] = {}
    for member in members:
        path = _member_path(member)
        if path is not None and member.isfile():
            if path in files:
                raise InvalidArchive(f"{path!r} appears twice in the archive")
            files[path] = member
    if sum(m.size for m in files.values()) > max_bytes:
        raise InvalidArchive(f"the archive unpacks to more than {max_bytes} bytes")
    return tar, files


def _strip_top_folder(files: dict[str, tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    """Accept ``tar czf x.tgz myexp/`` as well as ``tar czf x.tgz -C myexp .``."""
    if EXPERIMENT_FILE in files:
        return files
    tops = {path.split("/", 1)[0] for path in files}
    if len(tops) == 1:
        top = tops.pop()
        if f"{top}/{EXPERIMENT_FILE}" in files:
            return {path[len(top) + 1:]: m for path, m in files.items()}
    raise InvalidArchive(f"the archive has no {EXPERIMENT_FILE} at its root")


def unpack_experiment(stream: BinaryIO, dest: Path, max_bytes: int) -> dict[str, Any]:
    """Check the archive in ``stream`` and unpack it into the empty folder ``dest``.

    Returns the parsed ``experiment.json``.

    Raises:
        InvalidArchive: anything wrong with the archive (``dest`` is then left empty).
    """
    tar, files = _read_members(stream, max_bytes)
    with tar:
        files = _strip_top_folder(files)
        try:
            config = json.loads(tar.extractfile(files[EXPERIMENT_FILE]).read())
        except ValueError as exc:
            raise InvalidArchive(f"{EXPERIMENT_FILE} is not valid JSON: {exc}") from None
        check_config(config, set(files))
        try:
            for path, member in files.items():
                target = dest / path
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        except (tarfile.TarError, EOFError, OSError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise InvalidArchive(f"the archive is truncated or corrupt ({exc})") from None
    return config
