"""The two specialisations of the lifecycle: one per process.

Each delegates the work of its transitions to a collaborator given at
construction (the backend's supervisor, the simulation server's run loop), so
this package stays free of processes, HTTP and storage.
"""
from __future__ import annotations

from typing import Any, Protocol

from transitions import EventData

from lifecycle.machine import SimulationLifecycle
from lifecycle.states import SimState


class BackendActions(Protocol):
    """What the backend does when its lifecycle moves (called under the lock)."""

    def launch(self) -> None: ...
    def start(self) -> None: ...
    def resume(self) -> None: ...
    def pause(self) -> None: ...
    def stop(self) -> None: ...
    def finish(self, state: SimState, error: dict | None) -> None: ...
    def changed(self, state: SimState, previous: SimState | None = None,
                trigger: str | None = None, requested_by: str | None = None) -> None: ...


class BackendSimulationLifecycle(SimulationLifecycle):
    """The backend's view of a simulation: the state operators see.

    Operator edges are accepted at once and the work they imply is handed to
    ``actions`` (which must not block); system edges arrive from the supervisor
    once the simulation server reports or exits.
    """

    def __init__(self, sim_id: str, actions: BackendActions,
                 initial: SimState = SimState.CREATED) -> None:
        self.actions = actions
        super().__init__(sim_id, initial)

    # created -> initialized; queued -> initialized (the backend's queue admitted it)
    def on_enter_INITIALIZED(self, event: EventData) -> None:
        self.actions.launch()

    # initialized -> started, paused -> started
    def on_enter_STARTED(self, event: EventData) -> None:
        if event.event.name == "resume":
            self.actions.resume()
        else:
            self.actions.start()

    # started -> paused
    def on_enter_PAUSED(self, event: EventData) -> None:
        self.actions.pause()

    # non-terminal -> stopped
    def on_enter_STOPPED(self, event: EventData) -> None:
        self.actions.stop()
        self.actions.finish(SimState.STOPPED, None)

    # started/paused -> completed
    def on_enter_COMPLETED(self, event: EventData) -> None:
        self.actions.finish(SimState.COMPLETED, None)

    # non-terminal -> failed
    def on_enter_FAILED(self, event: EventData) -> None:
        self.actions.finish(SimState.FAILED, event.kwargs.get("error"))

    def on_state_change(self, event: EventData) -> None:
        # ``requested_by``: who asked, when the request said (``request(..., requested_by=)``).
        self.actions.changed(self.state, self.machine.get_state(event.transition.source).value,
                             event.event.name, event.kwargs.get("requested_by"))


class ServerListener(Protocol):
    """What the simulation server does when its lifecycle moves."""

    def state_changed(self, state: SimState, trigger: str, details: dict[str, Any]) -> None: ...


class SimulationServerLifecycle(SimulationLifecycle):
    """The simulation server's own machine: what the run loop obeys.

    Every change is reported to ``listener`` (the run loop gate, the event
    stream and ``status.json`` hang off it).
    """

    def __init__(self, sim_id: str, listener: ServerListener,
                 initial: SimState = SimState.CREATED) -> None:
        self.listener = listener
        super().__init__(sim_id, initial)

    def on_state_change(self, event: EventData) -> None:
        self.listener.state_changed(self.state, event.event.name, dict(event.kwargs))
