"""The transition table: data, not code.

Each entry is one edge of the lifecycle in the form ``transitions.Machine`` takes.
:data:`OPERATOR_TRIGGERS` names the edges a ``PUT .../state`` may take; the others
are fired by the system (the simulation server reporting how the script ended, or
the supervisor seeing the process die).
"""
from __future__ import annotations

from lifecycle.states import SimState

_NON_TERMINAL = [SimState.CREATED, SimState.QUEUED, SimState.INITIALIZED, SimState.STARTED,
                 SimState.PAUSED]

TRANSITIONS: list[dict] = [
    # created -> initialized: operator; fetch the experiment, spawn the server, build the kernel
    {"trigger": "initialize", "source": SimState.CREATED, "dest": SimState.INITIALIZED},
    # created -> queued: system; asked for initialized or started while the host is full
    # (the backend's queue remembers which). Initialized runs never queue: they hold
    # their slot already, so starting one needs nothing more.
    {"trigger": "enqueue", "source": SimState.CREATED, "dest": SimState.QUEUED},
    # queued -> initialized: system; the queue admitted it, launch as for initialize (a
    # run queued for started is then started at once)
    {"trigger": "admit", "source": SimState.QUEUED, "dest": SimState.INITIALIZED},
    # initialized -> started: operator; run_loop begins to advance
    {"trigger": "start", "source": SimState.INITIALIZED, "dest": SimState.STARTED},
    # paused -> started: operator; run_loop is released
    {"trigger": "resume", "source": SimState.PAUSED, "dest": SimState.STARTED},
    # started -> paused: operator; run_loop blocks before its next step
    {"trigger": "pause", "source": SimState.STARTED, "dest": SimState.PAUSED},
    # any non-terminal -> stopped: operator; graceful stop, then signals
    # (queued -> stopped: the run is cancelled, it leaves the queue)
    {"trigger": "stop", "source": _NON_TERMINAL, "dest": SimState.STOPPED},
    # started -> completed: system; the script returned or reached its timeout.
    # paused -> completed: system; the script ended before a pause reached it
    {"trigger": "complete", "source": [SimState.STARTED, SimState.PAUSED],
     "dest": SimState.COMPLETED},
    # any non-terminal -> failed: system; fetch/spawn/kernel/script error, crash, limit
    # (queued -> failed: the backend could not keep it queued)
    {"trigger": "fail", "source": _NON_TERMINAL, "dest": SimState.FAILED},
]

#: Triggers an operator may fire (through a requested target state).
OPERATOR_TRIGGERS = frozenset({"initialize", "start", "resume", "pause", "stop"})

#: Requests that take more than one edge: ``PUT started`` on a created simulation
#: initializes it first.
SHORTCUTS: dict[tuple[SimState, SimState], tuple[str, ...]] = {
    (SimState.CREATED, SimState.STARTED): ("initialize", "start"),
}


def edge_trigger(source: SimState, dest: SimState) -> str | None:
    """Return the operator trigger that leads from ``source`` to ``dest``, if any."""
    for edge in TRANSITIONS:
        sources = edge["source"] if isinstance(edge["source"], list) else [edge["source"]]
        if edge["trigger"] in OPERATOR_TRIGGERS and source in sources and edge["dest"] == dest:
            return edge["trigger"]
    return None
