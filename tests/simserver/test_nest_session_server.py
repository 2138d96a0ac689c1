"""A NEST session as a real simulation server: the NEST Server API under the control API's
``/nest/``, driven by ``nest-client``, paused and stopped by commands, spikes saved."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable

import numpy as np
import pytest
from nest_client import NESTClient

from lifecycle.messages import RESULTS_DIR, STDOUT_LOG
from tests.simserver.test_nest_api_differential import client_n_events
from tests.simserver.test_server_process import SimServer, spawn  # noqa: F401 - fixture
from tests.support import wait_until

pytestmark = pytest.mark.slow

SESSION = {"experiment.json": json.dumps({"nest_session": {"seed": 2024, "chunk": 10.0}})}


def client(server: SimServer) -> NESTClient:
    return NESTClient(server.url + "/nest", headers={"Authorization": f"Bearer {server.token}"})


def test_a_session_serves_nest_client_pauses_and_saves_spikes(
        spawn: Callable[..., SimServer]) -> None:  # noqa: F811 - the fixture
    server = spawn(SESSION).wait_listening()
    server.wait_state("initialized")
    assert server.get("/nest/").json() == {"mpi": False, "nest": "3.10.0"}
    assert server.get("/nest/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # Before start the session builds networks, but holds every Simulate.
    early = client(server)
    assert early.Create("iaf_psc_alpha", 2) == [1, 2]
    assert server.status()["nest_session"] == {"biological_time": 0.0, "paused": True,
                                               "simulate_until": None, "simulating": False,
                                               "stopping": False}
    assert server.command("start").status_code == 200
    n_events = client_n_events(server.url + "/nest",
                               {"Authorization": f"Bearer {server.token}"})
    assert n_events > 100
    assert server.status()["sim_time"] == 1000.0

    nsc = client(server)
    assert server.command("pause").json()["state"] == "paused"
    done = threading.Event()
    threading.Thread(target=lambda: (nsc.Simulate(500.0), done.set()), daemon=True).start()
    held = server.wait_status(lambda s: s["nest_session"]["simulating"], "a held Simulate")
    assert held["sim_time"] == 1000.0 and held["nest_session"]["paused"]
    # Reads are served while the Simulate is held; what would advance is refused.
    reads = client(server)
    assert reads.GetKernelStatus("biological_time") == 1000.0
    busy = reads.post("/api/ResetKernel", json={})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "kernel_busy"
    assert not done.is_set()
    server.command("resume")
    wait_until(done.is_set, 10, "the Simulate to end")
    assert server.status()["sim_time"] == 1500.0
    printed = nsc.exec_script("print('from the session')")
    assert printed == {"data": None, "stdout": "from the session"}   # nest-client: return=None

    assert server.command("stop").json()["state"] == "stopped"
    assert server.wait_exit() == 0
    assert server.final_status()["state"] == "stopped"
    spikes = np.load(server.run_dir / RESULTS_DIR / "spikes.npz")
    (times,) = [spikes[key] for key in spikes.files if key.endswith("_times")]
    assert len(times) > n_events and times.max() <= 1500.0
    assert "from the session" in (server.run_dir / "logs" / STDOUT_LOG).read_text()


def test_a_script_simulation_has_no_nest_routes(spawn: Callable[..., SimServer]) -> None:  # noqa: F811
    server = spawn().wait_listening()
    answer = server.get("/nest/api")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "no_nest_session"
