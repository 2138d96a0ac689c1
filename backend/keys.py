"""API keys: created and revoked by the CLI, verified by the backend on every request.

A key is ``sbk_<id>_<secret>``: the id finds its row, the secret (256 random bits) is
what proves it. Only the sha256 of the whole key is stored, and it is compared in
constant time; the key itself is shown once, when it is created. The keys live in the
registry's SQLite file, so ``simbackend keys`` works with the backend running or not
and a revocation takes effect at the next request.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from backend.access import ROLES, Identity
from backend.exceptions import InvalidRequest, NotFound
from backend.registry import connect, utc_now

logger = logging.getLogger(__name__)

PREFIX = "sbk_"
_KEY = re.compile(r"sbk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_DURATION = re.compile(r"([0-9]{1,6})([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: A key's last use is written at most this often (seconds): verifying costs no write.
LAST_USE_EVERY = 60.0
_COLUMNS = "id, name, role, created_at, expires_at, revoked_at, last_used_at"


def parse_duration(text: str) -> float:
    """``'30d'``, ``'12h'``, ``'90m'``, ``'45s'``, ``'2w'`` -> seconds.

    Raises:
        InvalidRequest: anything else.
    """
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise InvalidRequest(f"{text!r} is not a duration such as 30d, 12h, 90m, 45s or 2w",
                             code="invalid_duration")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _expired(expires_at: str | None) -> bool:
    return expires_at is not None and expires_at <= utc_now()


class KeyStore:
    """The ``api_keys`` table of the registry file; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS api_keys ("
            " id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,"
            " digest TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT,"
            " revoked_at TEXT, last_used_at TEXT)")
        self._used: dict[str, float] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, name: str, role: str, expires_in: float | None = None,
               ) -> tuple[dict[str, Any], str]:
        """A new key for ``name`` with ``role``: its listing entry and the key (shown once).

        Raises:
            InvalidRequest: a bad name or role.
        """
        if not _NAME.fullmatch(name):
            raise InvalidRequest("a key's name is 1-64 letters, digits, '.', '_', '@' or '-', "
                                 "starting with a letter or digit", code="invalid_name")
        if role not in ROLES:
            raise InvalidRequest(f"the role must be one of {', '.join(ROLES)}",
                                 code="invalid_role")
        key_id = secrets.token_hex(8)
        key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        now = datetime.now(timezone.utc)
        expires = _iso(now + timedelta(seconds=expires_in)) if expires_in else None
        with self._lock:
            self._db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                             (key_id, name, role, _digest(key), _iso(now), expires))
        logger.info("key created: %s (%s, role %s)", key_id, name, role)
        return self.get(key_id), key

    def get(self, key_id: str) -> dict[str, Any]:
        """Raises: NotFound."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?",
                                   (key_id,)).fetchone()
        if row is None:
            raise NotFound(f"no key with id {key_id!r}")
        return _entry(row)

    def list(self) -> list[dict[str, Any]]:
        """Every key, oldest first, with ``active`` (neither revoked nor expired)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, id").fetchall()
        return [_entry(row) for row in rows]

    def has_active(self) -> bool:
        return any(entry["active"] for entry in self.list())

    def revoke(self, name_or_id: str) -> list[str]:
        """Revoke the key with this id, or every active key of this name; their ids.

        Raises:
            NotFound: no active key has this id or name.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM api_keys WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
                (name_or_id, name_or_id)).fetchall()
            ids = [key_id for (key_id,) in rows]
            self._db.executemany("UPDATE api_keys SET revoked_at = ? WHERE id = ?",
                                 [(utc_now(), key_id) for key_id in ids])
        if not ids:
            raise NotFound(f"no active key has the id or name {name_or_id!r}")
        logger.info("key revoked: %s", ", ".join(ids))
        return ids

    def verify(self, token: str) -> Identity | None:
        """The identity of an active key, None if ``token`` is not one."""
        match = _KEY.fullmatch(token)
        if match is None:
            return None
        key_id = match.group(1)
        with self._lock:
            row = self._db.execute(
                "SELECT name, role, digest, expires_at, revoked_at FROM api_keys WHERE id = ?",
                (key_id,)).fetchone()
        if row is None:
            return None
        name, role, digest, expires_at, revoked_at = row
        if not hmac.compare_digest(digest, _digest(token)) or revoked_at or \
                _expired(expires_at):
            return None
        self._note_use(key_id)
        return Identity(name, role, "api_key")

    def _note_use(self, key_id: str) -> None:
        now = time.monotonic()
        if now - self._used.get(key_id, -LAST_USE_EVERY) < LAST_USE_EVERY:
            return
        self._used[key_id] = now
        with self._lock:
            self._db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?",
                             (utc_now(), key_id))


def _entry(row: tuple) -> dict[str, Any]:
    entry = dict(zip([c.strip() for c in _COLUMNS.split(",")], row, strict=True))
    entry["active"] = entry["revoked_at"] is None and not _expired(entry["expires_at"])
    return entry


def ensure_admin_key(store: KeyStore, key_file: Path) -> Path | None:
    """On a first start (no active key), create an admin key and write it to
    ``key_file`` (mode 0600, created so: never readable by others); return the path."""
    if store.has_active():
        return None
    _, key = store.create("admin", "admin")
    key_file.unlink(missing_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key_file
