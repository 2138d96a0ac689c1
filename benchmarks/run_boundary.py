"""What the run boundary adds to a launch, cgroup against marker, side by side.

    python -m benchmarks.run_boundary [--trials 20]

POST {"state": "started"} -> the first kernel step (sim_time > 0), and PUT stopped ->
the process exited (the kill and sweep of the boundary), for a backend holding runs
in a cgroup v2 each and one tracking them by the SIMBACKEND_RUN marker; plus the
cost of one membership read (the watchdog's, per running simulation and check).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from backend.launchers.boundary import Boundary, MarkerBoundary, open_boundary
from benchmarks.common import RunEvents, running_backend, summary
from benchmarks.control_latency import stop_start
from tests.support import loop_experiment


def membership_read(boundary: Boundary, reads: int) -> list[float]:
    took = []
    for _ in range(reads):
        began = time.perf_counter()
        if isinstance(boundary, MarkerBoundary):
            boundary._scan(fresh=True)  # what the watchdog pays once per 0.1 s
        else:
            boundary.members("bench")
        took.append(time.perf_counter() - began)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    modes = ["marker"]
    if open_boundary("auto", Path("/nonexistent/runs")).kind == "cgroup":
        modes.insert(0, "cgroup")
    found = {}
    for mode in modes:
        with running_backend("--run-boundary", mode) as backend, RunEvents(backend) as seen:
            backend.upload("bench", loop_experiment(sim_time=1e12))
            found[mode] = stop_start(backend, seen, "bench", args.trials)
    print(f"run boundary, {args.trials} trials each")
    for mode in modes:
        print(summary(f"{mode}: POST started -> first step", found[mode]["first_step"]))
        print(summary(f"{mode}: PUT stopped -> process exited", found[mode]["stop_exit"]))
    if "cgroup" in found:
        ratio = (sum(found["cgroup"]["first_step"]) / sum(found["marker"]["first_step"]))
        print(f"first step, cgroup / marker: {ratio:.2f}")
    marker = MarkerBoundary("bench")
    print(summary("marker: one scan of every process's environ", membership_read(marker, 50)))
    if "cgroup" in modes:
        cgroup = open_boundary("cgroup", Path(f"/nonexistent/bench-{time.time()}/runs"))
        cgroup.prepare("bench")
        try:
            print(summary("cgroup: one read of cgroup.procs", membership_read(cgroup, 50)))
        finally:
            cgroup.kill("bench")


if __name__ == "__main__":
    main()
