"""NEURON through simbackend: what the kernel, the server and the backend add to NEURON.

    python -m benchmarks.neuron_overhead [--runs 5] [--sim-time 1000]

Both parts use the Hodgkin-Huxley soma of ``examples/neuron_cell`` (dt 0.025 ms, 1 ms
kernel steps), clamped for the whole run so that it fires throughout.

1. In one process, CPU time: one ``h.continuerun(tstop)`` (A) against the same run cut
   into ``sim.run_loop(1)`` steps through the kernel and the neuron engine (B), and a
   Python loop of ``h.fadvance()`` (C: faster, but the engine does not step so, as it
   would bypass an ``advance()`` that a hoc model redefines); alternating runs, medians,
   overheads B/A - 1 and C/A - 1.
2. The example's whole run through the backend (and one ``POST ?wait=`` call for a
   100 ms run, answered once it has ended), ``POST {"state": "started"}`` until the
   client sees ``completed`` and until the results are uploaded (``cell.npz`` in hand),
   against the same model in plain NEURON in one fresh process (``python -c``: import,
   build, one ``continuerun``), and against that ``continuerun`` alone; ratios printed.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.common import running_backend
from benchmarks.nest_overhead import first, log_times
from simserver.engines import load_module
from simserver.kernel import build_kernel
from simserver.neuron_engine import import_neuron
from simserver.runloop import RunLoop
from lifecycle.experiment import read_experiment
from tests.support import ROOT, example_files, wait_until

CELL = ROOT / "examples" / "neuron_cell"
PARAMS = {"delay": 10.0, "dur": 1e9, "amp": 0.1}

#: The example model in plain NEURON: seconds to import, to build, and to continuerun.
PLAIN = '''
import json, os, sys, time
began = time.perf_counter()
os.environ["NEURON_MODULE_OPTIONS"] = "-nogui"
from neuron import h
h.load_file("stdrun.hoc")
imported = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from cell import build
h.dt = 0.025
built = build(h, json.loads(sys.argv[2]))
t = h.Vector().record(h._ref_t)
h.finitialize(-65.0)
ready = time.perf_counter()
h.continuerun(float(sys.argv[3]))
ran = time.perf_counter()
print(json.dumps({"import": imported - began, "build": ready - imported, "run": ran - ready,
                  "samples": len(built["soma_v"])}))
'''


def plain_run(h: Any, sim_time: float) -> None:
    """Build the example by hand and make one continuerun."""
    built = load_module("cell.py", CELL).build(h, PARAMS)
    h.dt = 0.025
    h.finitialize(-65.0)
    h.continuerun(sim_time)
    del built


def fadvance_run(h: Any, sim_time: float) -> None:
    """Build the example by hand and call fadvance from Python, 40 per millisecond."""
    built = load_module("cell.py", CELL).build(h, PARAMS)
    h.dt = 0.025
    h.finitialize(-65.0)
    fadvance = h.fadvance           # looked up once: the lookup costs as much as the call
    for _ in range(round(sim_time / h.dt)):
        fadvance()
    del built


def engine_run(sim_time: float) -> None:
    """The example through the kernel, stepped by ``run_loop(1)`` to ``sim_time``."""
    config = {**read_experiment(CELL), "engines": {"cell": {"type": "neuron",
                                                            "model": "cell.py"}}}
    kernel = build_kernel(config, CELL, PARAMS)
    loop = RunLoop(kernel, sim_timeout=sim_time)
    loop.release()
    while kernel.time < sim_time - 1e-9:
        loop.run_loop(1)
    kernel.shutdown()


def cpu_seconds(run: Callable[[], None]) -> float:
    began = time.process_time()
    run()
    return time.process_time() - began


def stepping_overhead(runs: int, sim_time: float) -> dict[str, float]:
    """Median CPU seconds of :func:`plain_run`, :func:`engine_run`, :func:`fadvance_run`
    (build included in all three: microseconds for one soma)."""
    h = import_neuron().h
    h.load_file("stdrun.hoc")
    kinds = {"continuerun": lambda: plain_run(h, sim_time),
             "run_loop": lambda: engine_run(sim_time),
             "fadvance": lambda: fadvance_run(h, sim_time)}
    found: dict[str, list[float]] = {name: [] for name in kinds}
    for attempt in range(runs):
        order = list(kinds) if attempt % 2 == 0 else list(reversed(kinds))
        for name in order:
            found[name].append(cpu_seconds(kinds[name]))
    return {name: statistics.median(values) for name, values in found.items()}


def plain_process(sim_time: float) -> dict[str, float]:
    """Wall seconds of plain NEURON in a fresh process: total and its parts."""
    began = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PLAIN, str(CELL), json.dumps(PARAMS),
                          str(sim_time)], capture_output=True, text=True, check=True,
                         cwd=ROOT, timeout=120).stdout
    total = time.perf_counter() - began
    return {**json.loads(out.strip().splitlines()[-1]), "total": total}


def backend_run(backend: Any, sim_time: float) -> dict[str, float]:
    """Seconds from POST to completed, to uploaded, to cell.npz downloaded; and the
    run_loop's own time from the run's log (``state: started`` to ``timeout:``)."""
    began = time.monotonic()
    sim = backend.create("neuron_cell", params=PARAMS, timeout={"sim_time": sim_time},
                         state="started")["id"]
    # Polled every 10 ms: on a small machine a busy client takes CPU from the simulation.
    wait_until(lambda: backend.record(sim)["state"] == "completed", 120, "completed")
    completed = time.monotonic() - began
    wait_until(lambda: backend.record(sim)["logs_uploaded"], 120, "the upload")
    uploaded = time.monotonic() - began
    trace = np.load(io.BytesIO(backend.get(f"/v1/simulations/{sim}/results/cell.npz").content))
    in_hand = time.monotonic() - began
    assert len(trace["t"]) == round(sim_time / 0.025) + 1
    lines = log_times(backend.get(f"/v1/simulations/{sim}/logs/simulation.log").text)
    stepping = first(lines, "timeout: ") - first(lines, "state: started")
    return {"POST -> completed": completed, "POST -> uploaded": uploaded,
            "POST -> cell.npz in hand": in_hand, "run_loop (from simulation.log)": stepping}


def wait_round_trip(backend: Any, sim_time: float) -> dict[str, float]:
    """One ``POST ?wait=`` call for a short run: seconds until it answers, ended."""
    began = time.monotonic()
    response = backend.post("/v1/simulations?wait=60", json={
        "experiment": "neuron_cell", "params": PARAMS, "timeout": {"sim_time": sim_time},
        "state": "started"})
    elapsed = time.monotonic() - began
    record = response.json()
    assert record["state"] == "completed" and record["results"], record
    return {"POST ?wait= round trip": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sim-time", type=float, default=1000.0)
    args = parser.parse_args()
    sim_time = args.sim_time

    cost = stepping_overhead(args.runs, sim_time)
    steps = round(sim_time / 0.025)
    print(f"1. in process, HH soma, {sim_time:g} ms = {steps} NEURON steps of 0.025 ms, CPU "
          f"time (median of {args.runs} alternating runs)")
    base = cost["continuerun"]
    print(f"   one h.continuerun({sim_time:g})        {base * 1e3:8.1f} ms")
    for name, label in (("run_loop", f"{sim_time:g} x sim.run_loop(1)"),
                        ("fadvance", f"{steps} x h.fadvance() from Python")):
        print(f"   {label:<32} {cost[name] * 1e3:8.1f} ms   overhead "
              f"{(cost[name] / base - 1) * 100:6.1f} %")
    print(f"   per kernel step: {(cost['run_loop'] - base) / sim_time * 1e6:6.1f} us of code "
          "around NEURON")

    plain = [plain_process(sim_time) for _ in range(args.runs)]
    with running_backend() as backend:
        backend.upload("neuron_cell", example_files("neuron_cell"))
        runs = [backend_run(backend, sim_time) for _ in range(args.runs)]
        waits = [wait_round_trip(backend, 100.0) for _ in range(args.runs)]

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    print(f"\n2. {sim_time:g} ms of biological time, wall time, median of {args.runs} runs")
    print(f"   plain NEURON, fresh process: total {median(plain, 'total') * 1e3:7.1f} ms "
          f"(import {median(plain, 'import') * 1e3:.1f}, build {median(plain, 'build') * 1e3:.1f}"
          f", continuerun {median(plain, 'run') * 1e3:.1f})")
    for name in runs[0]:
        print(f"   {name:<36} {median(runs, name) * 1e3:8.1f} ms")
    print(f"   POST ?wait= round trip, a 100 ms run (ended, results listed): "
          f"{median(waits, 'POST ?wait= round trip') * 1e3:8.1f} ms")
    for total in ("POST -> completed", "POST -> cell.npz in hand"):
        print(f"   ratio {total} / plain process: "
              f"{median(runs, total) / median(plain, 'total'):5.2f}; / continuerun alone: "
              f"{median(runs, total) / median(plain, 'run'):5.2f}")


if __name__ == "__main__":
    main()
