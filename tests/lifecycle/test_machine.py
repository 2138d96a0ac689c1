"""The lifecycle machines: every edge of the table, operator requests, system triggers,
the two specialisations and many threads on one machine.

The expected edges are written out from the lifecycle table (README.rst, Lifecycle),
not derived from ``lifecycle/table.py``, so a wrong table fails here.
"""
from __future__ import annotations

import json
import random
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from transitions import EventData

from lifecycle import (
    REQUESTABLE_STATES,
    TERMINAL_STATES,
    BackendActions,
    BackendSimulationLifecycle,
    InvalidTransition,
    LifecycleError,
    SimState,
    SimulationLifecycle,
    SimulationServerLifecycle,
    UnknownState,
    parse_state,
)
from lifecycle.table import TRANSITIONS

S = SimState
NON_TERMINAL = (S.CREATED, S.QUEUED, S.INITIALIZED, S.STARTED, S.PAUSED)
TRIGGERS = ("initialize", "enqueue", "admit", "start", "resume", "pause", "stop", "complete",
            "fail")

#: (source, trigger) -> dest: the lifecycle table of README.rst.
EDGES: dict[tuple[SimState, str], SimState] = {
    (S.CREATED, "initialize"): S.INITIALIZED,
    (S.CREATED, "enqueue"): S.QUEUED,          # the backend's queue: host full
    (S.QUEUED, "admit"): S.INITIALIZED,        # the queue admitted it
    (S.INITIALIZED, "start"): S.STARTED,
    (S.PAUSED, "resume"): S.STARTED,
    (S.STARTED, "pause"): S.PAUSED,
    (S.STARTED, "complete"): S.COMPLETED,
    (S.PAUSED, "complete"): S.COMPLETED,
    **{(state, "stop"): S.STOPPED for state in NON_TERMINAL},
    **{(state, "fail"): S.FAILED for state in NON_TERMINAL},
}

#: (current, requested) -> the triggers an operator's request fires, in order.
REQUESTS: dict[tuple[SimState, SimState], list[str]] = {
    (S.CREATED, S.INITIALIZED): ["initialize"],
    (S.CREATED, S.STARTED): ["initialize", "start"],
    (S.INITIALIZED, S.STARTED): ["start"],
    (S.PAUSED, S.STARTED): ["resume"],
    (S.STARTED, S.PAUSED): ["pause"],
    **{(state, S.STOPPED): ["stop"] for state in NON_TERMINAL},
}

SYSTEM_ONLY = (S.CREATED, S.QUEUED, S.COMPLETED, S.FAILED)


class RecordingLifecycle(SimulationLifecycle):
    """Records every state change as (source, trigger, dest, state seen by the callback)."""

    def __init__(self, initial: SimState = S.CREATED) -> None:
        self.seen: list[tuple[SimState, str, SimState, SimState]] = []
        self.overlapping_callbacks = 0
        self._in_callback = threading.Lock()
        super().__init__("sim-1", initial)

    def on_state_change(self, event: EventData) -> None:
        if not self._in_callback.acquire(blocking=False):
            self.overlapping_callbacks += 1
            return
        try:
            self.seen.append((S[event.transition.source], event.event.name,
                              S[event.transition.dest], self.state))
        finally:
            self._in_callback.release()

    @property
    def triggers(self) -> list[str]:
        return [trigger for _, trigger, _, _ in self.seen]


def _pairs(first: tuple, second: tuple) -> list[tuple]:
    return [pytest.param(a, b, id=f"{a}-{b}") for a in first for b in second]


def test_the_table_holds_exactly_the_contract_edges() -> None:
    table = {}
    for edge in TRANSITIONS:
        sources = edge["source"] if isinstance(edge["source"], list) else [edge["source"]]
        for source in sources:
            assert (source, edge["trigger"]) not in table, "duplicate edge"
            table[(source, edge["trigger"])] = edge["dest"]
    assert table == EDGES


@pytest.mark.parametrize("state, trigger", _pairs(tuple(S), TRIGGERS))
def test_fire_takes_exactly_the_table_edges(state: SimState, trigger: str) -> None:
    machine = RecordingLifecycle(state)
    dest = EDGES.get((state, trigger))
    if dest is not None:
        assert machine.fire(trigger) == dest
        assert machine.state == dest
        assert machine.seen == [(state, trigger, dest, dest)]
        return
    with pytest.raises(InvalidTransition) as refused:
        machine.fire(trigger)
    assert machine.state == state
    assert machine.seen == []
    if state in TERMINAL_STATES:
        assert "terminal" in str(refused.value)


@pytest.mark.parametrize("state, target", _pairs(tuple(S), tuple(S)))
def test_request_from_every_state_to_every_state(state: SimState, target: SimState) -> None:
    machine = RecordingLifecycle(state)
    if target in SYSTEM_ONLY:
        with pytest.raises(UnknownState, match="system only"):
            machine.request(target.value)
        assert machine.state == state
    elif target == state:
        assert machine.request(target.value) == state
        assert machine.seen == []
    elif (state, target) in REQUESTS:
        assert machine.request(target.value) == target
        assert machine.state == target
        assert machine.triggers == REQUESTS[(state, target)]
        assert machine.seen[-1][2:] == (target, target)
    else:
        with pytest.raises(InvalidTransition) as refused:
            machine.request(target.value)
        assert (refused.value.current, refused.value.target) == (state, target)
        assert machine.state == state
        assert machine.seen == []


def test_request_started_on_created_initializes_first() -> None:
    machine = RecordingLifecycle()
    assert machine.request(S.STARTED) == S.STARTED
    assert machine.seen == [(S.CREATED, "initialize", S.INITIALIZED, S.INITIALIZED),
                            (S.INITIALIZED, "start", S.STARTED, S.STARTED)]


@pytest.mark.parametrize("name", ["bogus", "", "STARTED", " started", None, 3, ["started"]])
def test_request_of_an_unknown_name_is_unknown_state(name: Any) -> None:
    machine = RecordingLifecycle(S.INITIALIZED)
    with pytest.raises(UnknownState, match="unknown state"):
        machine.request(name)
    assert machine.state == S.INITIALIZED


def test_lifecycle_errors_share_a_base_and_unknown_state_is_a_value_error() -> None:
    assert issubclass(InvalidTransition, LifecycleError)
    assert issubclass(UnknownState, LifecycleError)
    assert issubclass(UnknownState, ValueError)


@pytest.mark.parametrize("state", list(S), ids=str)
def test_is_terminal(state: SimState) -> None:
    assert RecordingLifecycle(state).is_terminal == (state in TERMINAL_STATES)


def test_fire_of_an_unknown_trigger_is_invalid_transition() -> None:
    machine = RecordingLifecycle(S.STARTED)
    with pytest.raises(InvalidTransition):
        machine.fire("explode")
    assert machine.state == S.STARTED


def test_concurrent_requests_serialize_into_valid_edges() -> None:
    """Many threads pause, resume and finally stop one machine at once."""
    threads, rounds = 8, 300
    machine = RecordingLifecycle(S.STARTED)
    barrier = threading.Barrier(threads)
    refused_in: list[SimState] = []

    def operator(seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        for _ in range(rounds):
            try:
                machine.request(rng.choice(["paused", "started"]))
            except InvalidTransition as exc:
                refused_in.append(exc.current)
        # The first thread done stops the machine while the others still go on.
        machine.request("stopped")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        workers = [threading.Thread(target=operator, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
        assert not any(worker.is_alive() for worker in workers)
    finally:
        sys.setswitchinterval(interval)

    assert machine.state == S.STOPPED
    assert machine.overlapping_callbacks == 0
    assert len(machine.seen) > 10
    for source, trigger, dest, state_in_callback in machine.seen:
        assert EDGES[(source, trigger)] == dest
        assert state_in_callback == dest
    # Each change starts where the one before ended: no lost or interleaved edge.
    sources = [source for source, _, _, _ in machine.seen]
    assert sources == [S.STARTED] + [dest for _, _, dest, _ in machine.seen[:-1]]
    assert machine.triggers.count("stop") == 1 and machine.triggers[-1] == "stop"
    # Only the terminal state refuses pause/resume: a non-terminal refusal would mean
    # a request planned in one state and fired in another.
    assert set(refused_in) <= {S.STOPPED}


# -- BackendSimulationLifecycle -------------------------------------------------

class RecordingActions:
    """BackendActions that records every call, with its arguments, in order."""

    NAMES = frozenset(name for name in vars(BackendActions) if not name.startswith("_"))

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.changes: list[tuple] = []  # changed()'s details: previous, trigger, requested_by

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name not in self.NAMES:
            raise AttributeError(name)
        return lambda *args: self._record(name, args)

    def _record(self, name: str, args: tuple) -> None:
        if name == "changed":
            self.changes.append(args)
            args = args[:1]
        self.calls.append((name, *args))


STOP_CALLS = [("stop",), ("finish", S.STOPPED, None), ("changed", S.STOPPED)]
COMPLETE_CALLS = [("finish", S.COMPLETED, None), ("changed", S.COMPLETED)]


@pytest.mark.parametrize("initial, method, argument, calls", [
    pytest.param(S.CREATED, "request", "initialized",
                 [("launch",), ("changed", S.INITIALIZED)], id="launch"),
    pytest.param(S.CREATED, "request", "started",
                 [("launch",), ("changed", S.INITIALIZED), ("start",), ("changed", S.STARTED)],
                 id="launch-then-start"),
    pytest.param(S.INITIALIZED, "request", "started", [("start",), ("changed", S.STARTED)],
                 id="start"),
    pytest.param(S.PAUSED, "request", "started", [("resume",), ("changed", S.STARTED)],
                 id="resume"),
    pytest.param(S.STARTED, "request", "paused", [("pause",), ("changed", S.PAUSED)],
                 id="pause"),
    pytest.param(S.STARTED, "request", "started", [], id="repeat-is-silent"),
    *[pytest.param(state, "request", "stopped", STOP_CALLS, id=f"stop-from-{state}")
      for state in NON_TERMINAL],
    pytest.param(S.STARTED, "fire", "complete", COMPLETE_CALLS, id="complete"),
    pytest.param(S.PAUSED, "fire", "complete", COMPLETE_CALLS, id="complete-while-paused"),
])
def test_backend_lifecycle_hands_each_edge_to_its_actions(
        initial: SimState, method: str, argument: str, calls: list[tuple]) -> None:
    actions = RecordingActions()
    machine = BackendSimulationLifecycle("sim-1", actions, initial)
    getattr(machine, method)(argument)
    assert actions.calls == calls


@pytest.mark.parametrize("initial", NON_TERMINAL, ids=str)
def test_backend_lifecycle_fail_passes_the_error_to_finish(initial: SimState) -> None:
    actions = RecordingActions()
    error = {"type": "script_error", "message": "ValueError: boom"}
    BackendSimulationLifecycle("sim-1", actions, initial).fire("fail", error=error)
    assert actions.calls == [("finish", S.FAILED, error), ("changed", S.FAILED)]


def test_backend_lifecycle_says_where_from_by_what_and_who_asked() -> None:
    """``requested_by`` travels from the request to ``changed`` (the seam authentication
    fills); the system's own transitions have none."""
    actions = RecordingActions()
    machine = BackendSimulationLifecycle("sim-1", actions)
    machine.request("started", requested_by="ada")
    machine.fire("complete")
    assert actions.changes == [(S.INITIALIZED, S.CREATED, "initialize", "ada"),
                               (S.STARTED, S.INITIALIZED, "start", "ada"),
                               (S.COMPLETED, S.STARTED, "complete", None)]


# -- SimulationServerLifecycle --------------------------------------------------

class RecordingListener:
    def __init__(self) -> None:
        self.changes: list[tuple[SimState, str, dict]] = []

    def state_changed(self, state: SimState, trigger: str, details: dict[str, Any]) -> None:
        self.changes.append((state, trigger, details))


def test_server_lifecycle_reports_every_change_to_its_listener() -> None:
    listener = RecordingListener()
    machine = SimulationServerLifecycle("sim-1", listener)
    machine.request("started")
    machine.request("started")
    machine.request("paused")
    error = {"type": "kernel_error", "message": "engine died"}
    machine.fire("fail", error=error)
    assert listener.changes == [
        (S.INITIALIZED, "initialize", {}),
        (S.STARTED, "start", {}),
        (S.PAUSED, "pause", {}),
        (S.FAILED, "fail", {"error": error}),
    ]


# -- states.py ------------------------------------------------------------------

def test_terminal_and_requestable_states() -> None:
    assert TERMINAL_STATES == {S.COMPLETED, S.STOPPED, S.FAILED}
    assert REQUESTABLE_STATES == {S.INITIALIZED, S.STARTED, S.PAUSED, S.STOPPED}
    assert [state for state in S if state.is_terminal] == [S.COMPLETED, S.STOPPED, S.FAILED]


@pytest.mark.parametrize("state", list(S), ids=str)
def test_parse_state_takes_wire_names_and_states(state: SimState) -> None:
    assert parse_state(state.value) is state
    assert parse_state(state) is state


@pytest.mark.parametrize("value", ["bogus", "", "Paused", None, 1.5, {"state": "paused"}])
def test_parse_state_rejects_what_names_no_state(value: Any) -> None:
    with pytest.raises(ValueError) as refused:
        parse_state(value)
    message = str(refused.value)
    assert repr(value) in message
    assert all(state.value in message for state in S)


def test_sim_state_is_its_wire_name() -> None:
    assert isinstance(S.PAUSED, str)
    assert S.PAUSED == "paused"
    assert str(S.PAUSED) == f"{S.PAUSED}" == "paused"
    assert json.dumps({"state": S.PAUSED}) == '{"state": "paused"}'
    assert json.loads(json.dumps(list(S))) == [
        "created", "queued", "initialized", "started", "paused", "completed", "stopped",
        "failed"]
