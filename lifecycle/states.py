"""The states of a simulation, shared by the backend and the simulation server.

Standard library only: every process imports this module, so it must stay cheap
and free of dependencies.
"""
from __future__ import annotations

from enum import Enum


class SimState(str, Enum):
    """Where a simulation is in its lifecycle (the value is the wire name)."""

    CREATED = "created"
    #: Asked to run, waiting for the host's capacity (backend only; holds no process).
    QUEUED = "queued"
    INITIALIZED = "initialized"
    STARTED = "started"
    PAUSED = "paused"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


#: Nothing leaves these states.
TERMINAL_STATES = frozenset({SimState.COMPLETED, SimState.STOPPED, SimState.FAILED})

#: States an operator may ask for with ``PUT .../state``; the rest are entered by
#: the system alone.
REQUESTABLE_STATES = frozenset(
    {SimState.INITIALIZED, SimState.STARTED, SimState.PAUSED, SimState.STOPPED}
)

#: States in which a simulation holds a simulation-server process.
ACTIVE_STATES = frozenset({SimState.INITIALIZED, SimState.STARTED, SimState.PAUSED})


def parse_state(value: object) -> SimState:
    """Return the state named by ``value``.

    Raises:
        ValueError: ``value`` names no state.
    """
    try:
        return SimState(value)
    except ValueError:
        names = ", ".join(s.value for s in SimState)
        raise ValueError(f"unknown state {value!r}; states are: {names}") from None
