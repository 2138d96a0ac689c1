"""The shared vocabulary of simulations: states, the transition table, machines and
the message shapes the backend and the simulation server exchange."""
from lifecycle.errors import InvalidTransition, LifecycleError, UnknownState
from lifecycle.machine import SimulationLifecycle
from lifecycle.specialised import (
    BackendActions,
    BackendSimulationLifecycle,
    ServerListener,
    SimulationServerLifecycle,
)
from lifecycle.states import (
    ACTIVE_STATES,
    REQUESTABLE_STATES,
    TERMINAL_STATES,
    SimState,
    parse_state,
)

__all__ = [
    "ACTIVE_STATES", "BackendActions", "BackendSimulationLifecycle", "ServerListener",
    "SimulationServerLifecycle", "REQUESTABLE_STATES", "TERMINAL_STATES", "InvalidTransition",
    "LifecycleError", "SimState", "SimulationLifecycle", "UnknownState", "parse_state",
]
