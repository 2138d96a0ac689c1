"""The lifecycle state machines, built on ``transitions``.

``SimulationLifecycle`` is the machine both processes share; the backend and the
simulation server specialise it with callbacks named by the ``transitions``
convention (``on_enter_STARTED`` and so on). Every machine is locked: requests
arrive on many threads. The lock is the lifecycle's own, held around every trigger;
``transitions``' ``LockedMachine`` would add a second one around every attribute access
of the model (four times the cost of a transition).
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from transitions import EventData, Machine, MachineError

from lifecycle.errors import InvalidTransition, UnknownState
from lifecycle.states import REQUESTABLE_STATES, TERMINAL_STATES, SimState, parse_state
from lifecycle.table import SHORTCUTS, TRANSITIONS, edge_trigger

logger = logging.getLogger(__name__)


class SimulationLifecycle:
    """One simulation's state machine.

    The state lives in ``self.state`` (a ``SimState``). Operators move it with
    :meth:`request`; the system fires ``complete`` and ``fail`` through
    :meth:`fire`. Terminal states are final: the table has no edge out of them
    and :meth:`fire` refuses to try.
    """

    state: SimState

    def __init__(self, sim_id: str, initial: SimState = SimState.CREATED) -> None:
        self.sim_id = sim_id
        # One re-entrant lock guards planning and firing together, so a
        # multi-edge request cannot interleave with another thread's trigger.
        self.lock = threading.RLock()
        self.machine = Machine(
            model=self,
            states=SimState,
            transitions=TRANSITIONS,
            initial=initial,
            auto_transitions=False,
            send_event=True,
            after_state_change="_after_state_change",
        )

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def plan(self, target: object) -> list[str]:
        """Return the triggers an operator request for ``target`` would fire.

        An empty list means the simulation is in ``target`` already.

        Raises:
            UnknownState: ``target`` is no state, or one only the system enters.
            InvalidTransition: ``target`` cannot be reached from the current state.
        """
        try:
            wanted = parse_state(target)
        except ValueError as exc:
            raise UnknownState(str(exc)) from None
        if wanted not in REQUESTABLE_STATES:
            allowed = ", ".join(sorted(s.value for s in REQUESTABLE_STATES))
            raise UnknownState(f"state {wanted} is entered by the system only; "
                               f"an operator may request: {allowed}")
        current = self.state
        if wanted == current:
            return []
        if current in TERMINAL_STATES:
            raise InvalidTransition(current, wanted, f"{current} is a terminal state")
        if (current, wanted) in SHORTCUTS:
            return list(SHORTCUTS[(current, wanted)])
        trigger = edge_trigger(current, wanted)
        if trigger is None:
            raise InvalidTransition(current, wanted)
        return [trigger]

    def request(self, target: object, **kwargs: Any) -> SimState:
        """Move to ``target`` on an operator's request and return the new state.

        Repeating the current state is a no-op.

        Raises:
            UnknownState, InvalidTransition: see :meth:`plan`.
        """
        with self.lock:
            for trigger in self.plan(target):
                self.fire(trigger, **kwargs)
            return self.state

    def fire(self, trigger: str, **kwargs: Any) -> SimState:
        """Fire ``trigger`` (operator or system) and return the new state.

        Raises:
            InvalidTransition: the trigger has no edge from the current state.
        """
        with self.lock:
            current = self.state
            if current in TERMINAL_STATES:
                raise InvalidTransition(current, trigger, f"{current} is a terminal state")
            if trigger not in self.machine.events:
                raise InvalidTransition(current, trigger, "no such trigger")
            try:
                self.trigger(trigger, **kwargs)
            except MachineError:
                raise InvalidTransition(current, trigger, "no such edge") from None
            return self.state

    def _after_state_change(self, event: EventData) -> None:
        logger.debug("sim %s: %s -> %s (%s)", self.sim_id, event.transition.source,
                     event.transition.dest, event.event.name)
        self.on_state_change(event)

    def on_state_change(self, event: EventData) -> None:
        """Hook for subclasses: runs after every state change, under the lock."""
