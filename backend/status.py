"""What the backend knows of a running simulation server: its live status and the
stream of events it pushes."""
from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Callable

from backend.control_client import ControlClient, ControlError
from backend.launchers import ServerHandle
from lifecycle import SimState
from lifecycle.live import read_live_status
from lifecycle.messages import STATUS_FILE
from storage.tree import read_regular

#: The status fields a simulation server reports (and ``status.json`` keeps).
STATUS_KEYS = ("sim_time", "steps", "timestep", "real_time", "timeout")
#: What the record keeps of a server's last ``status.json``: also what the run used
#: (CPU seconds, peak memory), which a live status gives as ``resources`` instead.
FINAL_STATUS_KEYS = (*STATUS_KEYS, "usage")
NO_RESOURCES = {"cpu_percent": 0.0, "rss_bytes": 0}
#: A server's ``status.json`` is well under a kilobyte; a bigger one is not its own.
MAX_STATUS_BYTES = 256 * 1024
_STATES = frozenset(state.value for state in SimState)


def _number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 63


#: The shape of each field of ``status.json`` the backend takes in.
_FINAL_FIELDS: dict[str, Callable[[Any], bool]] = {
    "state": lambda v: isinstance(v, str) and v in _STATES,
    "exit_code": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)
                                         and -256 < v < 256),
    "error": lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("type"), str)
                                     and isinstance(v.get("message"), str)),
    "sim_time": _number,
    "steps": _count,
    "timestep": lambda v: v is None or _number(v),
    "real_time": _number,
    "timeout": lambda v: isinstance(v, dict) and all(
        k in ("sim_time", "real_time") and (x is None or _number(x)) for k, x in v.items()),
    "usage": lambda v: isinstance(v, dict) and set(v) == {"cpu_seconds", "max_rss_bytes"}
    and _number(v["cpu_seconds"]) and _count(v["max_rss_bytes"]),
}


def final_status(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """What a gone server's ``status.json`` says, and what was wrong with it (None: all
    was well, or there is none). The script runs as the server and can write the file,
    so it is input like any other: only fields of the shapes the server writes are
    taken, and a file that is not a JSON object of at most :data:`MAX_STATUS_BYTES` is
    none at all."""
    try:
        raw = read_regular(run_dir, STATUS_FILE, MAX_STATUS_BYTES)
    except FileNotFoundError:
        if os.path.lexists(run_dir / STATUS_FILE):
            return {}, f"{STATUS_FILE} is not a regular file"
        return {}, None
    except OSError as exc:
        return {}, f"{STATUS_FILE} could not be read ({exc.strerror})"
    if len(raw) > MAX_STATUS_BYTES:
        return {}, f"{STATUS_FILE} is over {MAX_STATUS_BYTES // 1024} KiB"
    try:
        data = json.loads(raw)
    except ValueError:
        return {}, f"{STATUS_FILE} is not JSON"
    if not isinstance(data, dict):
        return {}, f"{STATUS_FILE} is not a JSON object"
    wrong = sorted(k for k, fits in _FINAL_FIELDS.items() if k in data and not fits(data[k]))
    kept = {k: data[k] for k in _FINAL_FIELDS if k in data and k not in wrong}
    return kept, f"{STATUS_FILE}: fields of the wrong shape ignored: {', '.join(wrong)}" \
        if wrong else None


def live_status(snapshot: dict[str, Any], client: ControlClient | None,
                server: ServerHandle | None, server_state: SimState | None,
                live_dir: Path | None = None) -> dict[str, Any]:
    """The status of ``GET .../status``: live from the server while it runs (from its
    shared memory in ``live_dir`` when it keeps one there, else its control API), the
    last known (the record's) after. Reads only; safe on any thread."""
    status = {"sim_time": 0.0, "steps": 0, "timestep": None, "real_time": 0.0,
              "timeout": snapshot["timeout"], "resources": dict(NO_RESOURCES),
              **snapshot["status"]}
    state = server_state.value if server_state else None
    if client is not None and server is not None and not server.exited.is_set():
        try:
            live = (read_live_status(live_dir) if live_dir is not None else None) \
                or client.status(timeout=1.0)
            status.update({k: live.get(k) for k in STATUS_KEYS}, resources=server.resources())
            if "nest_session" in live:  # biological time, simulating, simulate_until...
                status["nest_session"] = live["nest_session"]
            state = live.get("state", state)
        except ControlError:
            pass
    details = server.details() if server is not None else {}
    if details:
        status["launcher"] = details
    return {"state": snapshot["state"], "server_state": state, **status}


def follow_events(sim_id: str, client: ControlClient, server: ServerHandle,
                  ready: threading.Event, deliver: Callable[[dict[str, Any]], None]) -> None:
    """Relay the server's events to ``deliver``, on a thread of its own, until the server
    is gone; set ``ready`` once it reports having built its kernel."""

    def follow() -> None:
        seq = 0
        while not server.exited.is_set():
            try:
                events = client.events(seq, wait=20.0)
            except ControlError:
                server.exited.wait(0.1)
                continue
            for event in events:
                seq = event["seq"]
                if event.get("state") not in (None, SimState.CREATED):
                    ready.set()
                deliver(event)

    threading.Thread(target=follow, name=f"events-{sim_id}", daemon=True).start()
