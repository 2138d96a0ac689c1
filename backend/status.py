"""What the backend knows of a running simulation server: its live status and the
stream of events it pushes."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from backend.control_client import ControlClient, ControlError
from backend.launchers import ServerHandle
from lifecycle import SimState
from lifecycle.live import read_live_status

#: The status fields a simulation server reports (and ``status.json`` keeps).
STATUS_KEYS = ("sim_time", "steps", "timestep", "real_time", "timeout")
#: What the record keeps of a server's last ``status.json``: also what the run used
#: (CPU seconds, peak memory), which a live status gives as ``resources`` instead.
FINAL_STATUS_KEYS = (*STATUS_KEYS, "usage")
NO_RESOURCES = {"cpu_percent": 0.0, "rss_bytes": 0}


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
