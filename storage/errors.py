"""Exceptions raised by the storage package.

Every error derives from :class:`StorageError`, so callers (the backend's error
mapping) can catch the family at once and pick a status code per class.
"""
from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage failure."""


class InvalidKey(StorageError):
    """A key or prefix broke the key rules; raised before any I/O."""

    def __init__(self, key: object, reason: str, *, kind: str = "key") -> None:
        super().__init__(f"invalid {kind} {key!r}: {reason}")
        self.key = key
        self.reason = reason


class ObjectNotFound(StorageError):
    """No object is stored under `key`."""

    def __init__(self, key: str, where: str = "") -> None:
        suffix = f" in {where}" if where else ""
        super().__init__(f"no object {key!r}{suffix}")
        self.key = key


class StorageUnavailable(StorageError):
    """The backend cannot be reached or used: down, timing out, bad credentials."""
