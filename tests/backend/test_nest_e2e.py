"""NEST experiments through the real REST API, real simulation servers and real NEST.

Spikes that come back from the backend are compared, array for array, with a
``nest.Simulate`` of the same network and seed in a fresh Python process.
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

from tests.support import ROOT, Backend, example_files, loop_experiment, wait_until

pytestmark = pytest.mark.slow

#: How long a NEST run may take on a busy 2-core machine (import, build, steps, upload).
RUN_SECONDS = 90.0

#: The Brunel example's network in a fresh process, one nest.Simulate; spikes sorted
#: as spikes.npz sorts them (time, then sender).
REFERENCE = '''
import json, sys
import numpy as np
import nest
from simserver.spikes import sorted_spikes
sys.path.insert(0, sys.argv[1])
from brain import build
params, sim_time, out = json.loads(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
nest.ResetKernel()
nest.set(rng_seed=12345, local_num_threads=1, resolution=0.1)
nodes = build(nest, params)
nest.Simulate(sim_time)
arrays = {}
for name in ("ex_spikes", "in_spikes"):
    arrays[name + "_times"], arrays[name + "_senders"] = sorted_spikes([nodes[name].get("events")])
np.savez(out, **arrays)
'''

BROKEN_BRAIN = {
    "raises": 'def build(nest, params):\n    raise ValueError("area V9 does not exist")\n',
    "unknown-model": 'def build(nest, params):\n    return {"v1": nest.Create("iaf_nope", 4)}\n',
}

NEST_LOOP = '''
try:
    while True:
        sim.run_loop(1)
except SimulationTimeout:
    file_logger.info("reached the timeout at t=%s ms", sim.time)
'''


def nest_experiment(brain: str, **engine: Any) -> dict[str, str]:
    config = {"main_script": "main.py", "timestep": 1.0, "timeout": {"sim_time": 20.0},
              "engines": {"brain": {"type": "nest", "network": "brain.py", **engine}}}
    return {"experiment.json": json.dumps(config), "brain.py": brain, "main.py": NEST_LOOP}


def reference_spikes(tmp_path: Path, params: dict[str, Any], sim_time: float) -> dict:
    out = tmp_path / f"reference-{sim_time:g}.npz"
    subprocess.run([sys.executable, "-c", REFERENCE, str(ROOT / "examples" / "brunel"),
                    json.dumps(params), str(sim_time), str(out)],
                   cwd=ROOT, check=True, timeout=120, capture_output=True)
    return dict(np.load(out))


def result_spikes(backend: Backend, sim_id: str) -> dict[str, np.ndarray]:
    response = backend.get(f"/v1/simulations/{sim_id}/results/spikes.npz")
    assert response.status_code == 200, response.text
    return dict(np.load(io.BytesIO(response.content)))


def assert_same_spikes(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert got.keys() == expected.keys()
    assert len(expected["ex_spikes_times"]) > 0
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_brunel_completes_with_spikes_equal_to_one_simulate(backend: Backend,
                                                            tmp_path: Path) -> None:
    info = backend.get("/").json()
    assert info["kernels"]["nest"] == metadata.version("nest-simulator")
    assert backend.upload("brunel", example_files("brunel")).status_code == 201
    params = {"n_neurons": 300, "regime": "AI"}
    sim_id = backend.create("brunel", params=params, timeout={"sim_time": 200.0},
                            state="started")["id"]
    record = backend.wait_state(sim_id, "completed", "failed", timeout=RUN_SECONDS)
    assert record["error"] is None
    record = backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    assert record["status"]["sim_time"] == 200.0
    names = {r["name"] for r in backend.get(f"/v1/simulations/{sim_id}/results").json()["results"]}
    assert names == {"spikes.npz", "raster.png"}
    png = backend.get(f"/v1/simulations/{sim_id}/results/raster.png").content
    assert png.startswith(b"\x89PNG")
    assert_same_spikes(result_spikes(backend, sim_id), reference_spikes(tmp_path, params, 200.0))

    log = backend.get(f"/v1/simulations/{sim_id}/logs/simulation.log").text
    assert f"imported: NEST {metadata.version('nest-simulator')}" in log
    assert "built: engine brain, brain.py: excitatory, inhibitory, noise, ex_spikes" in log
    assert "saved: spikes.npz" in log and "ex_spikes: " in log
    stdout = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log").text
    assert "N E S T" not in stdout and "Simulation time" not in stdout


def test_paused_and_resumed_equals_uninterrupted(backend: Backend, tmp_path: Path) -> None:
    backend.upload("brunel", example_files("brunel"))
    params = {"n_neurons": 1000, "regime": "AI"}
    timeout = {"sim_time": 1500.0}
    paused = backend.create("brunel", params=params, timeout=timeout, state="started")["id"]
    wait_until(lambda: backend.status(paused)["sim_time"] > 100, RUN_SECONDS, "sim time > 100")
    for _ in range(2):
        backend.set_state(paused, "paused")
        backend.wait_server_state(paused, "paused")
        at = backend.frozen_sim_time(paused)
        assert 0 < at < 1500.0, "the run should be paused mid-way"
        backend.set_state(paused, "started")
        # Resumed before the next pause: else that pause's wait could see this one's
        # "paused" while the resume is still on its way (the answer does not wait for it).
        backend.wait_server_state(paused, "started")
    straight = backend.create("brunel", params=params, timeout=timeout, state="started")["id"]
    for sim_id in (paused, straight):
        record = backend.wait_state(sim_id, "completed", "failed", timeout=RUN_SECONDS)
        assert record["error"] is None
        backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    resumed = result_spikes(backend, paused)
    assert_same_spikes(resumed, result_spikes(backend, straight))
    assert_same_spikes(resumed, reference_spikes(tmp_path, params, 1500.0))


def test_stop_mid_run_keeps_the_spikes_simulated(backend: Backend, tmp_path: Path) -> None:
    backend.upload("brunel", example_files("brunel"))
    params = {"n_neurons": 1000, "regime": "AI"}
    sim_id = backend.create("brunel", params=params, timeout={"sim_time": 1e9},
                            state="started")["id"]
    wait_until(lambda: backend.status(sim_id)["sim_time"] > 200, RUN_SECONDS, "sim time > 200")
    backend.set_state(sim_id, "stopped")
    record = backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    assert record["state"] == "stopped" and record["error"] is None
    stopped_at = record["status"]["sim_time"]
    assert stopped_at > 200
    spikes = result_spikes(backend, sim_id)
    assert spikes["ex_spikes_times"].max() <= stopped_at
    assert_same_spikes(spikes, reference_spikes(tmp_path, params, stopped_at))
    names = {r["name"] for r in backend.get(f"/v1/simulations/{sim_id}/results").json()["results"]}
    assert "raster.png" in names


@pytest.mark.parametrize("case, message", [
    ("raises", "engine 'brain': brain.py build() failed: ValueError: area V9 does not exist"),
    ("unknown-model", "engine 'brain': brain.py build() failed: UnknownModelName: iaf_nope is "
                      "not a known model name."),
], ids=["raises", "unknown-model"])
def test_build_failures_fail_at_initialize_with_the_message(backend: Backend, case: str,
                                                            message: str) -> None:
    backend.upload("broken", nest_experiment(BROKEN_BRAIN[case]))
    sim_id = backend.create("broken", state="initialized")["id"]
    record = backend.wait_state(sim_id, "failed", timeout=RUN_SECONDS)
    assert record["error"]["type"] == "kernel_error"
    assert record["error"]["engine"] == "brain"
    assert record["error"]["message"] == message
    record = backend.wait_uploaded(sim_id)
    assert record["status"]["steps"] == 0
    assert message in backend.get(f"/v1/simulations/{sim_id}/logs/stderr.log").text
    if case == "raises":
        log = backend.get(f"/v1/simulations/{sim_id}/logs/simulation.log").text
        assert "Traceback" in log and 'raise ValueError("area V9 does not exist")' in log


def test_nest_messages_reach_the_run_logs(backend: Backend) -> None:
    brain = '''
def build(nest, params):
    nest.data_path = "/nonexistent/simbackend-test"     # NEST logs an error, keeps going
    pop = nest.Create("iaf_psc_alpha", 3, params={"I_e": 400.0})
    return {"pop": pop}
'''
    backend.upload("chatty", nest_experiment(brain, verbosity="INFO"))
    sim_id = backend.create("chatty", state="started")["id"]
    record = backend.wait_state(sim_id, "completed", "failed", timeout=RUN_SECONDS)
    assert record["error"] is None
    backend.wait_uploaded(sim_id)
    stderr = backend.get(f"/v1/simulations/{sim_id}/logs/stderr.log").text
    assert "[ERROR]" in stderr and "Directory '/nonexistent/simbackend-test' does not exist" \
        in stderr
    stdout = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log").text
    assert "[INFO]" in stdout and "Preparing 3 nodes for simulation." in stdout


def test_without_nest_only_nest_experiments_fail(tmp_path: Path) -> None:
    fake = tmp_path / "fake-site" / "nest"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("libnestkernel.so: cannot open")\n')
    backend = Backend(tmp_path / "data", env={"PYTHONPATH": str(fake.parent)})
    try:
        backend.start()
        backend.upload("brain", nest_experiment('def build(nest, params):\n    return {}\n'))
        script = ("import sys\nsim.run_loop(3)\n"
                  "(sim.results_dir / 'modules.txt').write_text(str('nest' in sys.modules))\n")
        backend.upload("plain", loop_experiment(script=script))
        brain = backend.create("brain", state="started")["id"]
        plain = backend.create("plain", state="started")["id"]
        record = backend.wait_state(brain, "failed", timeout=RUN_SECONDS)
        assert record["error"]["type"] == "kernel_error"
        assert record["error"]["message"] == ("engine 'brain': NEST cannot be imported: "
                                              "ImportError: libnestkernel.so: cannot open")
        assert backend.wait_state(plain, "completed", timeout=RUN_SECONDS)["error"] is None
        backend.wait_uploaded(plain)
        assert backend.get(f"/v1/simulations/{plain}/results/modules.txt").text == "False"
    finally:
        backend.cleanup()


def test_braitenberg_vehicle_approaches_the_light(backend: Backend) -> None:
    backend.upload("braitenberg", example_files("braitenberg"))
    sim_id = backend.create("braitenberg", state="started")["id"]
    record = backend.wait_state(sim_id, "completed", "failed", timeout=RUN_SECONDS)
    assert record["error"] is None
    backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    names = {r["name"] for r in backend.get(f"/v1/simulations/{sim_id}/results").json()["results"]}
    assert names == {"trajectory.npz", "trajectory.png", "spikes.npz", "raster.png",
                     "summary.txt"}
    response = backend.get(f"/v1/simulations/{sim_id}/results/trajectory.npz")
    trajectory = np.load(io.BytesIO(response.content))
    start, end = (np.linalg.norm(trajectory["light"] - trajectory["position"][i])
                  for i in (0, -1))
    assert end < start / 2, f"the vehicle went from {start:.2f} m to {end:.2f} m of the light"
    spikes = result_spikes(backend, sim_id)
    assert len(spikes["motor_left_spikes_times"]) > 0
    assert len(spikes["motor_right_spikes_times"]) > 0
    log = backend.get(f"/v1/simulations/{sim_id}/logs/simulation.log").text
    assert "reached the light" in log
