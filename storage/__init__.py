"""Object storage behind one interface: a local folder or an S3 bucket.

``open_storage(url)`` builds the backend named by a storage URL; everything
else speaks :class:`Storage`. Keys are validated before any I/O (see
:mod:`storage.keys`) and every failure is a :class:`StorageError`.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.atomic import atomic_write, write_json_atomic
from storage.base import ObjectInfo, Opened, Storage, served_range
from storage.errors import InvalidKey, ObjectNotFound, StorageError, StorageUnavailable
from storage.keys import join_key, validate_key, validate_prefix
from storage.local import LocalStorage
from storage.s3 import CONNECT_TIMEOUT, READ_TIMEOUT, RETRIES, S3Storage

__all__ = [
    "CONNECT_TIMEOUT",
    "READ_TIMEOUT",
    "RETRIES",
    "InvalidKey",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "Opened",
    "S3Storage",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "atomic_write",
    "join_key",
    "served_range",
    "open_storage",
    "validate_key",
    "validate_prefix",
    "write_json_atomic",
]


def open_storage(
    url: str,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    retries: int = RETRIES,
) -> Storage:
    """Return the storage a URL names: ``file:///abs/path`` or ``s3://bucket[/prefix]``.

    The timeouts (seconds) and retries apply to every S3 request; a folder ignores them.

    Raises:
        StorageError: for any other URL (relative file path, host, query, no bucket).
        InvalidKey: if the S3 prefix is not a valid prefix.
        ValueError: for a non-positive timeout or negative retries.
    """
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise StorageError(f"unsupported storage URL {url!r}: no query or fragment allowed")
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        return LocalStorage(Path(unquote(parts.path)))
    if parts.scheme == "s3" and parts.netloc:
        return S3Storage(
            parts.netloc,
            unquote(parts.path.removeprefix("/")),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries=retries,
        )
    raise StorageError(
        f"unsupported storage URL {url!r}: expected file:///absolute/path or s3://bucket[/prefix]"
    )
