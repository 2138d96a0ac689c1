"""Key rules shared by every storage backend.

A key is a '/'-separated relative path such as ``simulations/3f2a/logs/stdout.log``.
The rules keep keys safe to map onto a filesystem (no ``..``, no absolute paths)
and identical across backends, so a key valid in S3 is valid in a folder too.
"""
from __future__ import annotations

from storage.errors import InvalidKey

MAX_KEY_BYTES = 1024
# LocalStorage and atomic downloads write to files named like this before the
# final rename; reserving the name keeps a real object from hiding among them.
TEMP_PREFIX = ".tmp-"


def validate_key(key: str) -> str:
    """Return `key` unchanged if it is a valid object key.

    Raises:
        InvalidKey: naming the first rule the key breaks.
    """
    reason = _key_problem(key)
    if reason:
        raise InvalidKey(key, reason)
    return key


def validate_prefix(prefix: str) -> str:
    """Return `prefix` in folder form: ``''`` (the root) or ending with ``'/'``.

    ``'a/b'`` and ``'a/b/'`` name the same folder; listing it never matches
    ``'a/bc'``.

    Raises:
        InvalidKey: if the prefix, less one trailing '/', is not a valid key.
    """
    if prefix == "":
        return ""
    body = prefix[:-1] if isinstance(prefix, str) and prefix.endswith("/") else prefix
    reason = _key_problem(body) if body else "'/' alone is not a prefix; use '' for the root"
    if reason:
        raise InvalidKey(prefix, reason, kind="prefix")
    return body + "/"


def join_key(*parts: str) -> str:
    """Join `parts` with '/' into a validated key.

    Empty parts are skipped and one trailing '/' on a part is dropped, so a
    folder-form prefix joins cleanly: ``join_key('logs/', 'a.txt') == 'logs/a.txt'``.

    Raises:
        InvalidKey: if the joined key is invalid (e.g. a part is absolute).
    """
    pieces = [part.removesuffix("/") for part in parts if part]
    return validate_key("/".join(pieces))


def _key_problem(key: object) -> str | None:
    """Return why `key` is not a valid key, or None if it is."""
    if not isinstance(key, str):
        return "keys must be strings"
    if not key:
        return "keys must not be empty"
    if key.startswith("/"):
        return "keys must be relative (no leading '/')"
    if "\\" in key:
        return "backslashes are not allowed"
    if any(ord(char) < 32 or ord(char) == 127 for char in key):
        return "control characters are not allowed"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "keys must be valid unicode (no lone surrogates)"
    if size > MAX_KEY_BYTES:
        return f"keys must be at most {MAX_KEY_BYTES} bytes of UTF-8, this one is {size}"
    return _segment_problem(key.split("/"))


def _segment_problem(segments: list[str]) -> str | None:
    """Return why one of the '/'-separated `segments` is not allowed, or None."""
    for segment in segments:
        if segment == "":
            return "empty segments ('//' or a trailing '/') are not allowed"
        if segment in (".", ".."):
            return f"{segment!r} segments are not allowed"
        if segment.startswith(TEMP_PREFIX):
            return f"names starting with {TEMP_PREFIX!r} are reserved for temporary files"
    return None
