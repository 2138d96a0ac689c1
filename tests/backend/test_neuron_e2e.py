"""NEURON experiments through the real REST API, real simulation servers and real NEURON.

Traces that come back from the backend are compared, array for array, with one
``h.continuerun(tstop)`` of the same model in a fresh Python process.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import ROOT, Backend, example_files, wait_until

pytestmark = pytest.mark.slow

#: How long a NEURON run may take on a busy 2-core machine (import, build, steps, upload).
RUN_SECONDS = 90.0

#: The neuron_cell example in a fresh process: its model and its ``record`` probes, one
#: h.continuerun(tstop), as plain NEURON users run it.
REFERENCE = '''
import json, os, sys
import numpy as np
os.environ["NEURON_MODULE_OPTIONS"] = "-nogui"
from neuron import h
h.load_file("stdrun.hoc")
sys.path.insert(0, sys.argv[1])
from cell import build
params, tstop, out = json.loads(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
h.dt = 0.025
built = build(h, params)
seg = built["soma"](0.5)
vectors = {"soma_v": built["soma_v"], "t": h.Vector().record(h._ref_t),
           "m": h.Vector().record(seg._ref_m_hh), "h": h.Vector().record(seg._ref_h_hh),
           "n": h.Vector().record(seg._ref_n_hh), "i_stim": h.Vector().record(built["stim"]._ref_i)}
h.finitialize(-65.0)
h.continuerun(tstop)
np.savez(out, **{name: np.array(vector) for name, vector in vectors.items()})
'''

CELL_LOOP = '''
try:
    while True:
        sim.run_loop(1)
except SimulationTimeout:
    file_logger.info("reached the timeout at t=%s ms", sim.time)
'''


def paced_cell(**extra: Any) -> dict[str, bytes]:
    """The neuron_cell example, with ``extra`` (e.g. pacing) in its experiment.json."""
    files = example_files("neuron_cell")
    config = {**json.loads(files["experiment.json"]), **extra}
    return {**files, "experiment.json": json.dumps(config).encode()}


def reference_traces(tmp_path: Path, params: dict[str, Any], tstop: float) -> dict:
    out = tmp_path / f"reference-{tstop:g}.npz"
    subprocess.run([sys.executable, "-c", REFERENCE, str(ROOT / "examples" / "neuron_cell"),
                    json.dumps(params), str(tstop), str(out)],
                   cwd=ROOT, check=True, timeout=120, capture_output=True)
    return dict(np.load(out))


def result_traces(backend: Backend, sim_id: str) -> dict[str, np.ndarray]:
    response = backend.get(f"/v1/simulations/{sim_id}/results/cell.npz")
    assert response.status_code == 200, response.text
    return dict(np.load(io.BytesIO(response.content)))


def assert_same_traces(got: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                       min_spikes: int) -> None:
    assert got.keys() == expected.keys() == {"t", "soma_v", "m", "h", "n", "i_stim"}
    v = expected["soma_v"]
    assert int(((v[:-1] < 0.0) & (v[1:] >= 0.0)).sum()) >= min_spikes
    for key, values in expected.items():
        np.testing.assert_array_equal(got[key], values, err_msg=key)


def results_names(backend: Backend, sim_id: str) -> set[str]:
    listing = backend.get(f"/v1/simulations/{sim_id}/results").json()["results"]
    return {r["name"] for r in listing}


def test_cell_completes_with_the_trace_of_one_continuerun(backend: Backend,
                                                          tmp_path: Path) -> None:
    assert backend.upload("neuron_cell", example_files("neuron_cell")).status_code == 201
    params = {"delay": 100.0, "dur": 300.0, "amp": 0.1}
    sim_id = backend.create("neuron_cell", state="started")["id"]
    record = backend.wait_state(sim_id, "completed", "failed", timeout=RUN_SECONDS)
    assert record["error"] is None
    record = backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    assert record["status"]["sim_time"] == 500.0
    assert results_names(backend, sim_id) == {"cell.npz", "cell_v.png"}
    png = backend.get(f"/v1/simulations/{sim_id}/results/cell_v.png").content
    assert png.startswith(b"\x89PNG")
    traces = result_traces(backend, sim_id)
    assert len(traces["t"]) == 20001
    assert_same_traces(traces, reference_traces(tmp_path, params, 500.0), min_spikes=10)

    log = backend.get(f"/v1/simulations/{sim_id}/logs/simulation.log").text
    assert f"imported: NEURON {metadata.version('neuron')}" in log
    assert "built: engine cell, cell.py: soma_v, soma, stim" in log
    assert "saved: cell.npz (soma_v 20001 samples" in log
    spikes = int(((traces["soma_v"][:-1] < 0) & (traces["soma_v"][1:] >= 0)).sum())
    assert f"{spikes} spikes in 500 ms" in log
    stdout = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log").text
    assert "DISPLAY" not in stdout


def test_paused_and_resumed_equals_one_continuerun(backend: Backend, tmp_path: Path) -> None:
    # Paced at wall time, so that the run is still going when the pauses land.
    backend.upload("paced_cell", paced_cell(real_time_factor=1.0))
    params = {"delay": 50.0, "dur": 2000.0, "amp": 0.1}
    sim_id = backend.create("paced_cell", params=params, timeout={"sim_time": 1500.0},
                            state="started")["id"]
    stops = []
    for beyond in (200.0, 500.0):
        backend.wait_advancing(sim_id, beyond, timeout=RUN_SECONDS)
        backend.set_state(sim_id, "paused")
        backend.wait_server_state(sim_id, "paused")
        stops.append(backend.frozen_sim_time(sim_id))
        backend.set_state(sim_id, "started")
    assert 200 < stops[0] < stops[1] < 1500, f"paused at {stops}"
    record = backend.wait_state(sim_id, "completed", "failed", timeout=RUN_SECONDS)
    assert record["error"] is None
    backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    traces = result_traces(backend, sim_id)
    assert len(traces["t"]) == 60001
    assert_same_traces(traces, reference_traces(tmp_path, params, 1500.0), min_spikes=50)


def test_stop_mid_run_keeps_the_trace_simulated(backend: Backend, tmp_path: Path) -> None:
    backend.upload("paced_cell", paced_cell(real_time_factor=1.0))
    params = {"delay": 50.0, "dur": 1e9, "amp": 0.1}
    sim_id = backend.create("paced_cell", params=params, timeout={"sim_time": 1e9},
                            state="started")["id"]
    wait_until(lambda: backend.status(sim_id)["sim_time"] > 300, RUN_SECONDS, "sim time > 300")
    backend.set_state(sim_id, "stopped")
    record = backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    assert record["state"] == "stopped" and record["error"] is None
    stopped_at = record["status"]["sim_time"]
    traces = result_traces(backend, sim_id)
    assert traces["t"][-1] == pytest.approx(stopped_at, abs=1e-6)
    assert_same_traces(traces, reference_traces(tmp_path, params, stopped_at), min_spikes=10)
    assert "cell_v.png" in results_names(backend, sim_id)


@pytest.mark.parametrize("model, message", [
    ('def build(h, params):\n    raise ValueError("no such cell: pyramidal")\n',
     "engine 'cell': cell.py build() failed: ValueError: no such cell: pyramidal"),
    ('def build(h, params):\n    soma = h.Section(name="soma")\n    soma.insert("kv9")\n',
     ("engine 'cell': cell.py build() failed: ValueError: argument not a density mechanism "
     "name.")),
    ('def build(h, params):\n    h.execerror("bad cell", "geometry")\n',
     ("engine 'cell': cell.py build() failed: RuntimeError: hocobj_call error: "
     "hoc_execerror: bad cell geometry")),
    ("def build(h, params)\n    return {}\n",
     "engine 'cell': cell.py: syntax error at line 1: expected ':'"),
    ("x = 1\n", "engine 'cell': cell.py defines no build(h, params)"),
], ids=["raises", "unknown-mechanism", "hoc-error", "syntax", "no-build"])
def test_bad_models_fail_at_initialize_with_the_message(backend: Backend, model: str,
                                                        message: str) -> None:
    backend.upload("broken_cell", {**example_files("neuron_cell"), "cell.py": model})
    sim_id = backend.create("broken_cell", state="initialized")["id"]
    record = backend.wait_state(sim_id, "failed", timeout=RUN_SECONDS)
    assert record["error"]["type"] == "kernel_error"
    assert record["error"]["engine"] == "cell"
    assert record["error"]["message"] == message
    record = backend.wait_uploaded(sim_id)
    assert record["status"]["steps"] == 0
    stderr = backend.get(f"/v1/simulations/{sim_id}/logs/stderr.log").text
    assert message in stderr
    if "execerror" in model:
        assert "NEURON: bad cell geometry" in stderr        # NEURON's own report
    assert results_names(backend, sim_id) == set()


def test_a_timestep_off_dt_fails_at_initialize(backend: Backend) -> None:
    backend.upload("coarse_cell", paced_cell(timestep=0.03))
    sim_id = backend.create("coarse_cell", state="initialized")["id"]
    record = backend.wait_state(sim_id, "failed", timeout=RUN_SECONDS)
    assert record["error"]["type"] == "experiment_error"
    assert record["error"]["message"] == ("engine 'cell': the timestep 0.03 ms is not a whole "
                                          "multiple of NEURON's dt 0.025 ms")
