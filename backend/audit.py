"""The audit trail: one row per mutating request (and per key change made by the CLI).

Append-only through the code: nothing here updates or deletes a row, and the API has
no route that writes. Rows live in the registry's SQLite file, numbered by a counter
that never goes back.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from backend.exceptions import InvalidRequest
from backend.registry import connect, utc_now

#: Most entries one ``GET /v1/audit`` answers (and its default).
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_FIELDS = ("id", "time", "identity", "role", "method", "path", "target", "status", "client")


@dataclass(frozen=True)
class AuditEntry:
    identity: str
    role: str
    method: str
    path: str
    target: str | None
    status: int
    client: str
    time: str = field(default_factory=utc_now)


@dataclass(frozen=True)
class AuditQuery:
    """``GET /v1/audit`` filters: each one given must match."""

    identity: str | None = None
    target: str | None = None
    method: str | None = None
    status: int | None = None
    #: ISO 8601: entries at or after it.
    since: str | None = None
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidRequest(f"'limit' must be from 1 to {MAX_LIMIT}",
                                 code="invalid_argument")
        if self.since is not None:
            try:
                datetime.fromisoformat(self.since.replace("Z", "+00:00"))
            except ValueError:
                raise InvalidRequest("'since' must be an ISO 8601 time, such as "
                                     "2026-01-31T12:00:00Z", code="invalid_argument") from None


class AuditLog:
    """The ``audit`` table of the registry file; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS audit ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, identity TEXT NOT NULL,"
            " role TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, target TEXT,"
            " status INTEGER NOT NULL, client TEXT NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS audit_by_time ON audit (time)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def append(self, entry: AuditEntry) -> None:
        row = asdict(entry)
        with self._lock:
            self._db.execute(
                "INSERT INTO audit (time, identity, role, method, path, target, status, client)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", tuple(row[f] for f in _FIELDS[1:]))

    def query(self, query: AuditQuery) -> list[dict[str, Any]]:
        """The entries matching ``query``, newest first."""
        where, args = [], []
        for name in ("identity", "target", "method", "status"):
            value = getattr(query, name)
            if value is not None:
                where.append(f"{name} = ?")
                args.append(value.upper() if name == "method" else value)
        if query.since is not None:
            where.append("time >= ?")
            args.append(_normal_time(query.since))
        sql = f"SELECT {', '.join(_FIELDS)} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?",
                                    (*args, query.limit)).fetchall()
        return [dict(zip(_FIELDS, row, strict=True)) for row in rows]


def _normal_time(text: str) -> str:
    """``since`` in the form the entries are written (UTC, ``Z``), so strings compare."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")
