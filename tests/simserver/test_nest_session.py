"""The NEST session in process, with real NEST: stepped Simulate, pause, stop, spikes.

The test's own (main) thread is the kernel thread, as in a simulation server: NEST was
imported on it. Calls come from a helper thread, as from the control API's.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simserver.errors import KernelBusy, SessionClosed, SimulationStopped
from simserver.nest_api import handle
from simserver.nest_engine import import_nest
from simserver.nest_session import NestSession
from simserver.spikes import sorted_spikes
from tests.simserver.test_nest_engine import BRUNEL, reference_spikes
from tests.support import wait_until

nest = import_nest()
PARAMS = {"n_neurons": 200}


def build_brunel(label: bool = False) -> dict[str, Any]:
    """The Brunel network in a fresh kernel, seeded as the reference (min_delay 1 ms: the
    recorders' connections have the default delay)."""
    namespace: dict[str, Any] = {}
    exec(BRUNEL, namespace)  # noqa: S102 - the example's own network module
    nest.ResetKernel()
    nest.set(rng_seed=12345, local_num_threads=1, resolution=0.1)
    nodes = namespace["build"](nest, PARAMS)
    if label:
        nodes["ex_spikes"].set(label="ex_spikes")
    return nodes


def spikes_of(nodes: dict[str, Any]) -> dict[str, np.ndarray]:
    found = {}
    for name in ("ex_spikes", "in_spikes"):
        found[f"{name}_times"], found[f"{name}_senders"] = sorted_spikes(
            [nodes[name].get("events")])
    return found


def assert_same_spikes(found: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert len(expected["ex_spikes_times"]) > 100
    for key, spikes in expected.items():
        np.testing.assert_array_equal(found[key], spikes, err_msg=key)


def on_kernel_thread(session: NestSession, client: Callable[[], Any]) -> Any:
    """Serve ``session`` on this thread while ``client`` runs on another; stop after it."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = client()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            outcome["error"] = exc
        finally:
            session.stop()

    thread = threading.Thread(target=run, name="client")
    thread.start()
    session.serve()
    thread.join(30)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


@pytest.fixture(autouse=True)
def fresh_kernel() -> Any:
    yield
    nest.ResetKernel()


@pytest.mark.parametrize("chunk, budget", [(1.0, None), (10.0, None), (4.0, 0.2)])
def test_stepped_simulate_gives_the_spikes_of_one_simulate(chunk: float,
                                                           budget: float | None) -> None:
    expected = reference_spikes(PARAMS, 300.0)
    nodes = build_brunel()
    session = NestSession(nest, chunk=chunk, wall_budget=budget)
    session.simulate(100.0)
    session.simulate(200.0)
    assert nest.biological_time == 300.0
    assert not nest.GetKernelStatus("prepared")
    assert_same_spikes(spikes_of(nodes), expected)


def test_pause_holds_between_chunks_and_reads_are_served(tmp_path: Path) -> None:
    expected = reference_spikes(PARAMS, 400.0)
    nodes = build_brunel()
    session = NestSession(nest, chunk=1.0, wall_budget=None, held=True)

    def client() -> dict[str, Any]:
        simulating = threading.Thread(target=session.submit,
                                      args=(lambda: session.stepped.Simulate(400.0), "Simulate"))
        simulating.start()
        wait_until(lambda: session.status()["simulating"], 10, "the Simulate to begin")
        assert session.status()["biological_time"] == 0.0       # held before the first chunk
        session.resume()
        wait_until(lambda: session.status()["biological_time"] >= 30.0, 10, "30 ms simulated")
        session.pause()
        assert session.settle(5)               # the chunk in flight has ended
        paused_at = session.status()["biological_time"]
        time.sleep(0.2)  # a window in which a held session must not move (no event to poll)
        # A read between two chunks answers; a call that would advance is refused.
        status, now = handle(session, "GET", "/api/biological_time")
        with pytest.raises(KernelBusy, match="paused"):
            session.submit(nest.ResetKernel, "ResetKernel")
        seen = session.status()
        session.resume()
        simulating.join(30)
        return {"paused_at": paused_at, "read": (status, now), "seen": seen}

    found = on_kernel_thread(session, client)
    assert 30.0 <= found["paused_at"] < 400.0
    assert found["read"] == (200, found["seen"]["biological_time"])
    assert found["seen"]["paused"] and found["seen"]["simulating"]
    assert found["seen"]["biological_time"] == found["paused_at"]   # settled: not a step more
    assert found["seen"]["simulate_until"] == 400.0
    assert nest.biological_time == 400.0
    assert_same_spikes(spikes_of(nodes), expected)


def test_stop_ends_a_simulate_between_chunks_and_spikes_are_saved(tmp_path: Path) -> None:
    nodes = build_brunel(label=True)
    session = NestSession(nest, chunk=2.0, wall_budget=None)
    errors: list[BaseException] = []

    def client() -> None:
        def simulate() -> None:
            try:
                session.submit(lambda: session.stepped.Simulate(100000.0), "Simulate")
            except BaseException as exc:  # noqa: BLE001 - checked below
                errors.append(exc)
        simulating = threading.Thread(target=simulate)
        simulating.start()
        wait_until(lambda: session.status()["biological_time"] >= 20.0, 10, "20 ms simulated")
        session.stop()
        simulating.join(30)
        with pytest.raises(SessionClosed):
            session.submit(lambda: None, "GetKernelStatus")

    on_kernel_thread(session, client)
    assert len(errors) == 1 and isinstance(errors[0], SimulationStopped)
    stopped_at = nest.biological_time
    assert 20.0 <= stopped_at < 100000.0
    assert nest.min_delay == 1.0 and stopped_at % 2.0 == 0      # at a chunk's end
    assert not nest.GetKernelStatus("prepared")                 # cleaned up
    path = session.save_spikes(tmp_path)
    saved = dict(np.load(path))
    in_id = nodes["in_spikes"].global_id
    assert set(saved) == {"ex_spikes_times", "ex_spikes_senders",
                          f"spike_recorder_{in_id}_times", f"spike_recorder_{in_id}_senders"}
    np.testing.assert_array_equal(saved["ex_spikes_times"], spikes_of(nodes)["ex_spikes_times"])
    assert saved["ex_spikes_times"].max() <= stopped_at


def test_bad_times_are_refused_as_nest_refuses_them_and_the_kernel_is_untouched() -> None:
    session = NestSession(nest)
    with pytest.raises(nest.NESTErrors.BadParameter, match="cannot be negative"):
        session.simulate(-1.0)
    with pytest.raises(nest.NESTErrors.BadParameter, match="multiple of the simulation"):
        session.simulate(0.05)
    with pytest.raises(TypeError):
        session.simulate("10")
    assert not nest.GetKernelStatus("prepared")
    session.simulate(0.0)
    session.simulate(2.5)
    assert nest.biological_time == 2.5
