"""NEST through simbackend: what the kernel, the server and the backend add to NEST.

    python -m benchmarks.nest_overhead [--blocks 40] [--steps 100] [--runs 5] [--trials 30]

All three parts use the 1000-neuron Brunel network of ``examples/brunel`` (AI regime)
with 1 ms steps.

1. In one process: blocks of a raw ``nest.Run(1.0)`` loop (A) and of ``sim.run_loop(1)``
   through the kernel and the nest engine (B) alternate on the same prepared network,
   timed in CPU time; the median of the paired overheads B/A - 1 (target: <= 3 %), and
   the cost of the code around ``nest.Run`` alone.
2. The whole run through the backend, ``POST {"state": "started"}`` until the client sees
   ``completed`` (and until the results are uploaded), for 1 s of biological time, versus
   ``nest.Simulate(1000)`` in this process; the difference is broken down from the
   timestamps in the backend's log and the run's ``simulation.log``.
3. Pause and stop latency with the network running (control_latency's measurements;
   target p99 <= 50 ms).
"""
from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from benchmarks.common import Backend, RunEvents, per_step, running_backend
from benchmarks.control_latency import pause_resume, report, stop_start
from simserver.engines import load_module
from simserver.kernel import build_kernel
from simserver.runloop import RunLoop
from lifecycle.experiment import read_experiment
from tests.support import ROOT, example_files, wait_until

BRUNEL = ROOT / "examples" / "brunel"
PARAMS = {"n_neurons": 1000, "regime": "AI"}
SIM_TIME = 1000.0

#: Phases of a run through the backend: (name, log line starting it, log line ending it).
#: "post", "completed" and "uploaded" are the client's clock; the rest are log markers.
PHASES = [
    ("POST -> spawned (request, fetch experiment)", "post", "spawned: sim {id}"),
    ("spawned -> listening (python, simserver)", "spawned: sim {id}", "listening:"),
    ("listening -> NEST imported", "listening:", "imported: NEST"),
    ("NEST imported -> network built", "imported: NEST", "built: engine"),
    ("built -> started (initialized, start)", "built: engine", "state: started"),
    ("started -> 1 s simulated (run_loop)", "state: started", "timeout: "),
    ("simulated -> client sees completed", "timeout: ", "completed"),
    ("completed -> spikes, raster saved", "state: completed", "saved: raster.png"),
    ("saved -> exited, uploaded (client sees it)", "saved: raster.png", "uploaded"),
]


def kernel_overhead(blocks: int, steps: int) -> dict[str, float]:
    """CPU seconds per 1 ms step: raw ``nest.Run`` loop (``raw``) and ``run_loop``
    (``loop``); the median of the blocks' paired overheads (``overhead``); and the cost
    of the code around ``nest.Run`` alone (``path``), measured with ``Run`` a no-op.

    CPU time, not wall time, and blocks alternating in order (A B, B A, ...) so that
    other processes on the machine and the network's own fluctuations cancel out.
    """
    kernel = build_kernel(read_experiment(BRUNEL), BRUNEL, PARAMS)
    loop = RunLoop(kernel)
    loop.release()
    engine = kernel.engines["brain"]
    nest = engine.nest
    loop.run_loop(1)                   # the first step prepares NEST
    raw = lambda: nest.Run(1.0)        # noqa: E731
    found: dict[str, list[float]] = {"raw": [], "loop": [], "overhead": []}
    for block in range(blocks):
        order = (raw, loop.run_loop) if block % 2 == 0 else (loop.run_loop, raw)
        cost = {f: per_step(f, steps, time.process_time) for f in order}
        found["raw"].append(cost[raw])
        found["loop"].append(cost[loop.run_loop])
        found["overhead"].append(cost[loop.run_loop] / cost[raw] - 1)
    stub = SimpleNamespace(Run=lambda dt: None)
    engine.nest = stub
    path = per_step(loop.run_loop, 100_000, time.process_time) \
        - per_step(lambda: stub.Run(1.0), 100_000, time.process_time)
    engine.nest = nest
    kernel.shutdown()
    return {**{key: statistics.median(values) for key, values in found.items()},
            "path": path}


def in_process_simulate(nest: Any, step: float | None = None) -> tuple[float, float]:
    """Seconds to build the network and to run it for 1 s, in this process: one
    ``Simulate``; with ``step``, one ``Prepare``, a ``Run(step)`` each and one
    ``Cleanup``, as the nest engine does for a script calling ``run_loop(1)``."""
    build = load_module("brain.py", BRUNEL).build
    began = time.perf_counter()
    nest.ResetKernel()
    nest.set(rng_seed=12345, local_num_threads=1, resolution=0.1)
    build(nest, PARAMS)
    built = time.perf_counter()
    # As quiet as the engine runs it (its default verbosity is WARNING): at NEST's own
    # default, INFO, every Run prints four lines, which cost ~10 % of this loop.
    verbosity, nest.verbosity = nest.verbosity, nest.VerbosityLevel.ERROR
    try:
        if step is None:
            nest.Simulate(SIM_TIME)
        else:
            nest.Prepare()
            for _ in range(round(SIM_TIME / step)):
                nest.Run(step)
            nest.Cleanup()
    finally:
        nest.verbosity = verbosity
    return built - began, time.perf_counter() - built


def log_times(text: str) -> list[tuple[float, str]]:
    """(epoch seconds, message) of each ``asctime LEVEL name: message`` log line."""
    found = []
    for line in text.splitlines():
        try:
            when = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        found.append((when, line[23:].split(": ", 1)[-1]))
    return found


def first(lines: list[tuple[float, str]], marker: str) -> float:
    return next(when for when, message in lines if message.startswith(marker))


def phase_marks(backend: Backend, sim: str, client: dict[str, float]) -> dict[str, float]:
    """Epoch seconds of every marker of :data:`PHASES` for one run.

    Markers naming the simulation are found in the backend's log, the others in the
    run's simulation.log (the backend logs a ``listening:`` of its own).
    """
    backend_lines = log_times(backend.log())
    run_lines = log_times(backend.get(f"/v1/simulations/{sim}/logs/simulation.log").text)
    marks = dict(client)
    for marker in {m for _, start, end in PHASES for m in (start, end)} - set(marks):
        if "{id}" in marker:
            marks[marker] = first(backend_lines, marker.format(id=sim))
        else:
            marks[marker] = first(run_lines, marker)
    return marks


def backend_run(backend: Backend) -> dict[str, float]:
    """One run through the backend; seconds per phase of :data:`PHASES`, and totals."""
    posted, began = time.time(), time.monotonic()
    sim = backend.create("brunel", params=PARAMS, timeout={"sim_time": SIM_TIME},
                         state="started")["id"]
    # Polled every 10 ms, not every 1 ms: on a small machine a busy client would take
    # CPU from the simulation it measures.
    wait_until(lambda: backend.record(sim)["state"] == "completed", 120, "completed")
    completed = time.monotonic() - began
    wait_until(lambda: backend.record(sim)["logs_uploaded"], 120, "the upload")
    uploaded = time.monotonic() - began
    marks = phase_marks(backend, sim, {"post": posted, "completed": posted + completed,
                                       "uploaded": posted + uploaded})
    phases = {name: marks[end] - marks[start] for name, start, end in PHASES}
    return {**phases, "POST -> completed": completed, "POST -> uploaded": uploaded}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()

    cost = kernel_overhead(args.blocks, args.steps)
    print(f"1. in process, Brunel {PARAMS['n_neurons']} neurons, 1 ms steps, CPU time "
          f"(median of {args.blocks} alternating blocks of {args.steps} steps)")
    print(f"   raw nest.Run(1.0) loop   {cost['raw'] * 1e3:8.3f} ms/step")
    print(f"   sim.run_loop(1)          {cost['loop'] * 1e3:8.3f} ms/step   overhead "
          f"{cost['overhead'] * 100:5.2f} %  target <=3%: "
          f"{'OK' if cost['overhead'] <= 0.03 else 'MISSED'}")
    print(f"   the code around nest.Run (run_loop, kernel, engine) alone: "
          f"{cost['path'] * 1e6:5.2f} us/step = {cost['path'] / cost['raw'] * 100:5.2f} % "
          "of a step")

    import nest
    reference = [in_process_simulate(nest) for _ in range(args.runs)]
    build_s = statistics.median(r[0] for r in reference)
    simulate_s = statistics.median(r[1] for r in reference)
    with running_backend() as backend:
        backend.upload("brunel", example_files("brunel"))
        runs = [backend_run(backend) for _ in range(args.runs)]
        with RunEvents(backend) as seen:
            paused = pause_resume(backend, seen, "brunel", args.trials, params=PARAMS,
                                  timeout={"sim_time": 1e12})
            stopped = stop_start(backend, seen, "brunel", args.trials, params=PARAMS,
                                 timeout={"sim_time": 1e12})

    print(f"\n2. 1 s of biological time, median of {args.runs} runs")
    print(f"   in process: build {build_s * 1e3:7.1f} ms, nest.Simulate({SIM_TIME:g}) "
          f"{simulate_s * 1e3:7.1f} ms; {SIM_TIME:g} x nest.Run(1.0) (from 1.) "
          f"{cost['raw'] * SIM_TIME * 1e3:7.1f} ms CPU")
    for name in runs[0]:
        median = statistics.median(run[name] for run in runs)
        print(f"   {name:<46} {median * 1e3:8.1f} ms")
    for total in ("POST -> completed", "POST -> uploaded"):
        ratio = statistics.median(run[total] for run in runs) / simulate_s
        print(f"   ratio {total} / nest.Simulate: {ratio:5.2f}")

    print(f"\n3. control latency with the network running, {args.trials} trials each")
    report(paused, stopped, first_step_target=None)   # includes importing NEST


if __name__ == "__main__":
    main()
