"""The queue's pure parts: order, admission with its reasons, moves, what a run reserves."""
from __future__ import annotations

import pytest

from backend.config import Config
from backend.queue import (
    Capacity, Demand, Entry, Holder, move, never_fits, ordered, plan, resolve_demand,
)
from lifecycle import SimState
from lifecycle.errors import InvalidExperiment


def entry(sim_id: str, seq: int, priority: int = 0, owner: str | None = None,
          threads: int = 1, memory_mb: float = 0.0) -> Entry:
    return Entry(sim_id, owner, priority, seq, SimState.STARTED, Demand(threads, memory_mb))


def holder(sim_id: str, owner: str | None = None, threads: int = 1) -> Holder:
    return Holder(sim_id, owner, Demand(threads))


def ids(entries: list[Entry]) -> list[str]:
    return [e.sim_id for e in entries]


def test_order_is_priority_then_first_come() -> None:
    queue = [entry("a", 0), entry("b", 1, priority=5), entry("c", 2), entry("d", 3, 5),
             entry("e", 4, -1)]
    assert ids(ordered(queue)) == ["b", "d", "a", "c", "e"]


def test_admits_in_order_while_cores_last_and_says_why_the_rest_wait() -> None:
    queue = [entry("a", 0, threads=2), entry("b", 1, threads=3), entry("c", 2)]
    decided = plan(queue, [holder("x")], Capacity(threads=4, memory_mb=1000))
    assert ids(decided.admit) == ["a"]
    assert decided.reasons == {"b": "waiting for 2 cores", "c": "behind b (waiting for 2 cores)"}
    assert ids(decided.waiting) == ["b", "c"]


def test_memory_and_the_running_cap_hold_runs_back() -> None:
    queue = [entry("a", 0, memory_mb=600), entry("b", 1)]
    decided = plan(queue, [], Capacity(threads=8, memory_mb=500))
    assert decided.admit == [] and decided.reasons["a"] == "waiting for 100 MiB"
    decided = plan([entry("a", 0)], [holder("x"), holder("y")],
                   Capacity(threads=8, memory_mb=500, max_running=2))
    assert decided.reasons["a"] == "waiting for a slot (2 running, the cap)"


def test_an_owner_at_the_cap_does_not_hold_back_the_others() -> None:
    queue = [entry("a1", 0, owner="alice"), entry("a2", 1, owner="alice"),
             entry("b1", 2, owner="bob"), entry("n1", 3)]
    decided = plan(queue, [holder("x", "alice")], Capacity(threads=8, memory_mb=1e6,
                                                           per_owner=1))
    assert ids(decided.admit) == ["b1", "n1"]  # anonymous is an owner of its own
    assert decided.reasons == {"a1": "owner alice has 1 running (the per-owner cap)",
                               "a2": "owner alice has 1 running (the per-owner cap)"}


def test_admitting_counts_towards_the_owner_cap_within_one_pass() -> None:
    queue = [entry("a1", 0, owner="alice"), entry("a2", 1, owner="alice")]
    decided = plan(queue, [], Capacity(threads=8, memory_mb=1e6, per_owner=1))
    assert ids(decided.admit) == ["a1"]
    assert "per-owner cap" in decided.reasons["a2"]


@pytest.mark.parametrize("position, expected", [
    (0, ["c", "a", "b", "d"]), (1, ["a", "c", "b", "d"]), (3, ["a", "b", "d", "c"]),
    (99, ["a", "b", "d", "c"])])
def test_move_keeps_the_order_sorted_and_the_others_first_come(
        position: int, expected: list[str]) -> None:
    queue = ordered([entry("a", 0, 9), entry("b", 1, 5), entry("c", 2, 5), entry("d", 3, 0)])
    moved = next(e for e in queue if e.sim_id == "c")
    assert move(queue, moved, position) == [moved]
    assert ids(queue) == expected
    assert ids(ordered(queue)) == expected  # what a restart reads back
    assert [e.seq for e in queue if e is not moved] == [0, 1, 3]


def test_many_moves_to_one_spot_end_in_a_renumbering() -> None:
    queue = ordered([entry("a", 1000), entry("b", 1001), *(entry(f"m{i}", 1002 + i)
                                                           for i in range(20))])
    renumbered = False
    for moved in list(queue[2:]) * 4:
        renumbered |= len(move(queue, moved, 1)) > 1
        assert ids(queue)[:2] == ["a", moved.sim_id]
        assert ids(ordered(queue)) == ids(queue)
    assert renumbered


def test_what_a_run_reserves() -> None:
    config = Config(data_dir="/tmp/unused", memory_limit_mb=0)
    exp = {"resources": {"threads": 2, "memory_mb": 100}, "limits": {"memory_mb": 300}}
    assert resolve_demand({}, exp, {}, config) == Demand(2, 100.0)
    assert resolve_demand({"threads": 4}, exp, {}, config) == Demand(4, 100.0)
    assert resolve_demand({}, {"limits": {"memory_mb": 300}}, {}, config) == Demand(1, 300.0)
    assert resolve_demand({}, {}, {"memory_mb": 50}, config) == Demand(1, 50.0)
    assert resolve_demand({}, {}, {}, config) == Demand(1, 0.0)
    with pytest.raises(InvalidExperiment, match="resources.threads"):
        resolve_demand({}, {"resources": {"threads": 1.5}}, {}, config)


def test_a_run_bigger_than_the_host_never_fits() -> None:
    host = Capacity(threads=2, memory_mb=1000)
    assert never_fits(Demand(2, 1000), host) is None
    assert "needs 3 cores" in never_fits(Demand(3, 0), host)
    assert "needs 1001 MiB" in never_fits(Demand(1, 1001), host)
