"""The bundled examples and the client snippet work against a real backend."""
from __future__ import annotations

import os
import subprocess
import sys


from tests.support import ROOT, Backend


def test_closed_loop_reaches_its_target(seeded: Backend) -> None:
    sim_id = seeded.create("closed_loop", state="started")["id"]
    record = seeded.wait_uploaded(sim_id, timeout=60)
    assert record["state"] == "completed", record["error"]
    summary = seeded.get(f"/v1/simulations/{sim_id}/results/summary.txt").text
    distance = float(summary.rsplit("final distance", 1)[1])
    assert distance < 0.01
    assert "final distance to target" in seeded.get(
        f"/v1/simulations/{sim_id}/logs/simulation.log").text


def test_hello_traces_a_damped_oscillation(seeded: Backend) -> None:
    import io

    import numpy as np

    sim_id = seeded.create("hello", timeout={"sim_time": 1500.0}, params={"damping": 0.5},
                           state="started")["id"]
    record = seeded.wait_uploaded(sim_id, timeout=60)
    assert record["state"] == "completed", record["error"]
    trace = np.load(io.BytesIO(seeded.get(f"/v1/simulations/{sim_id}/results/trace.npz").content))
    assert len(trace["t"]) == 1500 and trace["t"][-1] == 1500.0
    assert abs(trace["x"][-1]) < 1.0  # damped


def test_neuron_cell_fires_during_the_current_step(seeded: Backend) -> None:
    import io

    import numpy as np

    sim_id = seeded.create("neuron_cell", state="started")["id"]
    record = seeded.wait_uploaded(sim_id, timeout=60)
    assert record["state"] == "completed", record["error"]
    trace = np.load(io.BytesIO(seeded.get(f"/v1/simulations/{sim_id}/results/cell.npz").content))
    t, v = trace["t"], trace["soma_v"]
    assert len(t) == 20001 and abs(t[-1] - 500.0) < 1e-6
    crossings = t[1:][(v[:-1] < 0.0) & (v[1:] >= 0.0)]
    assert len(crossings) > 5
    assert 100.0 < crossings.min() and crossings.max() < 400.0     # only while clamped


def test_client_snippet_runs_end_to_end(seeded: Backend) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "client.py"), "--url", seeded.url,
         "--experiment", str(ROOT / "examples" / "closed_loop"), "--sim-time", "2000"],
        # The key comes from the data dir of the backend on this machine (admin.key).
        env={**os.environ, "SIMBACKEND_DATA_DIR": str(seeded.data_dir)},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ended completed" in result.stdout
    assert "trajectory.npz" in result.stdout
