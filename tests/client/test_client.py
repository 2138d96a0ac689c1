"""The Python client against a real backend."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client import Client, SimbackendError
from tests.support import Backend, ROOT, python_c

pytestmark = pytest.mark.slow


def test_a_whole_run_through_the_client(backend: Backend, tmp_path: Path) -> None:
    sims = Client(backend.url, backend.token)
    pushed = sims.push_experiment(ROOT / "examples" / "hello", "hello-client")
    assert pushed["name"] == "hello-client"
    assert "hello-client" in {e["name"] for e in sims.experiments()}
    assert sims.experiment("hello-client")["config"]["main_script"] == "main.py"
    sim = sims.create("hello-client", params={"damping": 0.3}, timeout={"sim_time": 800.0},
                      state="started")
    assert sims.simulation(sim["id"])["params"] == {"damping": 0.3}
    seen = {}
    for event in sims.events(sim["id"]):
        seen.setdefault(event.type, event)
    assert {"state", "log", "end"} <= set(seen)
    assert seen["end"].data["state"] == "completed"
    # From the end on, there is nothing: the iteration ends at once instead of waiting.
    assert list(sims.events(sim["id"], last_event_id=seen["end"].id)) == []
    record = sims.wait(sim["id"])
    assert record["state"] == "completed" and record["exit_code"] == 0
    assert sims.status(sim["id"])["sim_time"] == pytest.approx(800.0)
    assert "simulation.log" in {f["name"] for f in sims.logs(sim["id"])}
    assert "reached the timeout" in sims.log(sim["id"], "simulation.log")
    lines = list(sims.follow_logs(sim["id"]))
    assert ("stdout.log", "saved 800 samples to results/trace.npz") in lines
    saved = sims.download_results(sim["id"], tmp_path / "out")
    assert [p.name for p in saved] == ["trace.npz"]
    assert len(np.load(saved[0])["t"]) == 800
    assert sims.nest_url(sim["id"]) == f"{backend.url}/v1/simulations/{sim['id']}/nest/"
    assert sim["id"] in {s["id"] for s in sims.simulations(state="completed")}
    sims.delete(sim["id"])
    assert sim["id"] not in {s["id"] for s in sims.simulations()}


def test_state_changes_and_errors(backend: Backend, loop: str) -> None:
    sims = Client(backend.url, backend.token)
    sim_id = sims.create(loop, id="mine")["id"]
    assert sims.start(sim_id) == "started"
    assert sims.pause(sim_id) == "paused"
    assert sims.resume(sim_id) == "started"
    with pytest.raises(SimbackendError) as refused:
        sims.create(loop, id="mine")
    assert (refused.value.status, refused.value.code) == (409, "duplicate_id")
    assert refused.value.error["message"] and "409" in str(refused.value)
    with pytest.raises(SimbackendError) as bad:
        sims.set_state(sim_id, "completed")
    assert bad.value.status == 400 and sims.state(sim_id) == "started"
    with pytest.raises(SimbackendError) as missing:
        sims.simulation("nope")
    assert missing.value.code == "simulation_not_found"
    assert sims.stop(sim_id) == "stopped"
    assert sims.wait(sim_id)["state"] == "stopped"
    with pytest.raises(SimbackendError) as gone:
        Client("http://127.0.0.1:9", timeout=2).info()
    assert gone.value.status is None and gone.value.code == "unreachable"


def test_the_client_and_its_verbs_load_no_flask() -> None:
    code = ("import sys; import client; from backend.cli import main; "
            "rc = main(['--url', 'http://127.0.0.1:9', 'ls']); "
            "assert rc == 3, rc; "
            "assert not {'flask', 'flask_restful', 'nest', 'waitress'} & set(sys.modules)")
    done = python_c(code, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().startswith("simbackend: cannot reach the backend")
