"""The registry of simulations, persisted in SQLite so records survive restarts.

Beside the records it keeps each simulation's *events* (state changes, its end), numbered
by one counter that never goes back (``AUTOINCREMENT``: ids are never reused, even after
a delete), so a client can resume an event stream from the last id it saw, across
restarts. A state change and its event are saved in one transaction: no crash leaves one
without the other.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from backend.exceptions import DuplicateSimulation
from lifecycle import SimState


def utc_now() -> str:
    """The current time as ISO 8601 UTC, millisecond precision."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the registry file, shared by threads (each user holds its own lock),
    in autocommit and WAL mode: the registry, the keys and the audit, from the backend and
    the command line at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


@dataclass
class SimulationRecord:
    """What the API reports of a simulation, and what is persisted.

    Once created, a record is changed only by its supervisor's worker (see
    :mod:`backend.supervisor`); everyone else reads the snapshots it publishes.
    """

    id: str
    #: None for a NEST session that has no experiment of its own.
    experiment: str | None
    main_script: str
    state: SimState = SimState.CREATED
    #: The version of the experiment the run fetched (``"plain"``: an unversioned folder).
    experiment_version: str | None = None
    created_at: str = field(default_factory=utc_now)
    updated_at: str = ""
    ended_at: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    timeout: dict[str, float] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    #: The limits its launch resolved (POST, experiment.json, the backend's defaults):
    #: ``real_time`` (s), ``memory_mb``, ``start_timeout`` (s); None before a launch.
    effective_limits: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    exit_code: int | None = None
    logs_uploaded: bool = False
    #: What the upload left out and why (links, FIFOs, over the limits), if anything.
    upload: dict[str, Any] | None = None
    #: The last status the simulation server reported (sim_time, steps, ...).
    status: dict[str, Any] = field(default_factory=dict)
    #: Who the run belongs to (None: anonymous); the queue's per-owner cap groups by it.
    owner: str | None = None
    #: Queue order: higher first, then first come (see :mod:`backend.queue`).
    priority: int = 0
    #: What the run reserves of the host while it holds a process.
    threads: int = 1
    memory_mb: float = 0.0
    #: ``"nest"`` for a NEST session (the NEST Server API under ``.../nest/``), else None.
    kernel: str | None = None
    #: A NEST session's settings (``threads``, ``seed``, ``resolution``, ``idle_timeout``,
    #: ``exec``; ``idle_stopped`` once its idle timeout ended it).
    nest: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.updated_at = self.updated_at or self.created_at
        self.state = SimState(self.state)

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (the state by its wire name), sharing nothing
        with the record. Written out, not ``asdict``: it runs at every save, and asdict
        costs ten times as much."""
        data = {name: _copied(getattr(self, name)) for name in _FIELDS}
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulationRecord:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


_FIELDS = tuple(f.name for f in fields(SimulationRecord))


def _copied(value: Any) -> Any:
    """A copy of JSON-like ``value`` that shares no dict or list with it."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    return value


@dataclass(frozen=True)
class StoredEvent:
    """One persisted event of a simulation: its id (above every earlier one), type, data."""

    id: int
    sim_id: str
    type: str
    data: dict[str, Any]


class Registry:
    """SQLite-backed store of :class:`SimulationRecord`; safe across threads."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS simulations ("
            " id TEXT PRIMARY KEY, experiment TEXT NOT NULL, state TEXT NOT NULL,"
            " created_at TEXT NOT NULL, record TEXT NOT NULL)")
        # The queue's order (see backend.queue): a row per queued simulation, written
        # before its record says queued and removed after it says something else.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS queue ("
            " id TEXT PRIMARY KEY, seq REAL NOT NULL, target TEXT NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, sim_id TEXT NOT NULL, type TEXT NOT NULL,"
            " data TEXT NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS events_by_sim ON events (sim_id, id)")

    def insert(self, record: SimulationRecord) -> None:
        """Add a new record.

        Raises:
            DuplicateSimulation: the id is taken.
        """
        try:
            self._write("INSERT INTO simulations VALUES (?, ?, ?, ?, ?)", record)
        except sqlite3.IntegrityError:
            raise DuplicateSimulation(f"a simulation with id {record.id!r} exists") from None

    def save(self, record: SimulationRecord, event: tuple[str, dict[str, Any]] | None = None,
             ) -> StoredEvent | None:
        """Save ``record``; with ``event`` (type, data), append that event of it in the
        same transaction and return it as stored."""
        if event is None:
            self._write("INSERT OR REPLACE INTO simulations VALUES (?, ?, ?, ?, ?)", record)
            return None
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR REPLACE INTO simulations VALUES (?, ?, ?, ?, ?)",
                                 _row(record))
                stored = self._append(record.id, *event)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return stored

    def append_event(self, sim_id: str, type: str, data: dict[str, Any]) -> StoredEvent:
        with self._lock:
            return self._append(sim_id, type, data)

    def events(self, after: int, sim_id: str | None = None,
               limit: int = 1000) -> list[StoredEvent]:
        """Events numbered above ``after`` (of one simulation, or of all), oldest first."""
        with self._lock:
            if sim_id is None:
                rows = self._db.execute(
                    "SELECT id, sim_id, type, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
                    (after, limit)).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT id, sim_id, type, data FROM events WHERE sim_id = ? AND id > ?"
                    " ORDER BY id LIMIT ?", (sim_id, after, limit)).fetchall()
        return [StoredEvent(i, s, t, json.loads(d)) for i, s, t, d in rows]

    def has_event(self, sim_id: str, type: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM events WHERE sim_id = ? AND type = ? LIMIT 1",
                                    (sim_id, type)).fetchone() is not None

    def last_event_id(self, sim_id: str | None = None) -> int:
        """The newest event's id (of one simulation, or of all); 0 if none."""
        with self._lock:
            if sim_id is None:
                return self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
            return self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events WHERE sim_id = ?",
                                    (sim_id,)).fetchone()[0]

    def delete(self, sim_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM simulations WHERE id = ?", (sim_id,))
            self._db.execute("DELETE FROM events WHERE sim_id = ?", (sim_id,))

    def load_all(self) -> Iterator[SimulationRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM simulations ORDER BY created_at, id").fetchall()
        for (data,) in rows:
            yield SimulationRecord.from_dict(json.loads(data))

    # -- the queue ------------------------------------------------------------------

    def enqueue(self, sim_id: str, seq: float, target: SimState) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO queue VALUES (?, ?, ?)",
                             (sim_id, seq, target.value))

    def reorder(self, rows: list[tuple[str, float, SimState]]) -> None:
        """Rewrite the places of queued simulations, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("UPDATE queue SET seq = ?, target = ? WHERE id = ?",
                                     [(seq, target.value, sim_id) for sim_id, seq, target in rows])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def dequeue(self, sim_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM queue WHERE id = ?", (sim_id,))

    def queue_rows(self) -> list[tuple[str, float, SimState]]:
        """``(id, seq, target)`` of every queue row, in sequence order."""
        with self._lock:
            rows = self._db.execute("SELECT id, seq, target FROM queue ORDER BY seq").fetchall()
        return [(sim_id, seq, SimState(target)) for sim_id, seq, target in rows]

    def _write(self, sql: str, record: SimulationRecord) -> None:
        row = _row(record)
        with self._lock:
            self._db.execute(sql, row)

    def _append(self, sim_id: str, type: str, data: dict[str, Any]) -> StoredEvent:
        """Insert one event (the caller holds the lock)."""
        cursor = self._db.execute("INSERT INTO events (sim_id, type, data) VALUES (?, ?, ?)",
                                  (sim_id, type, json.dumps(data, separators=(",", ":"))))
        return StoredEvent(cursor.lastrowid, sim_id, type, data)


def _row(record: SimulationRecord) -> tuple[str, str, str, str, str]:
    data = record.to_dict()
    return (record.id, record.experiment or "", data["state"], record.created_at,
            json.dumps(data, separators=(",", ":")))
