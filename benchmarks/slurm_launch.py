"""Launching through Slurm against launching locally, on a real single-node Slurm.

    python -m benchmarks.slurm_launch [--trials 10] [--batch 20]

Start: POST {"state": "started"} -> the first kernel step (sim_time > 0), one run at a
time, through the local launcher and through the Slurm launcher, side by side.
Batch: 20 short runs POSTed at once through Slurm -> all completed and uploaded
(total, and per run).

Starts (and stops) its own Slurm with tests/slurm_cluster.py (installs slurm-wlm and
munge with apt-get when missing; needs root).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import Backend, RunEvents, running_backend, summary, wait
from tests.slurm_cluster import start_cluster
from tests.support import loop_experiment

POLL_INTERVAL = "0.2"


def first_steps(backend: Backend, trials: int) -> list[float]:
    """Seconds from POST started to the first step, one run after another."""
    backend.upload("loop", loop_experiment(sim_time=1e9))
    found = []
    with RunEvents(backend) as seen:  # as a client follows it, not polling
        for _ in range(trials):
            began = time.monotonic()
            sim = backend.create("loop", state="started")["id"]
            found.append(seen.first_step(sim, 120) - began)
            backend.set_state(sim, "stopped")
            wait(lambda sim=sim: backend.record(sim)["logs_uploaded"], 120)
    return found


def batch(backend: Backend, runs: int) -> float:
    """Seconds from POSTing ``runs`` short runs at once to all of them uploaded."""
    backend.upload("short", loop_experiment(sim_time=200))
    began = time.monotonic()
    sims = [backend.create("short", state="started")["id"] for _ in range(runs)]
    for sim in sims:
        wait(lambda sim=sim: backend.record(sim)["logs_uploaded"], 600)
        record = backend.record(sim)
        if record["state"] != "completed":
            raise RuntimeError(f"sim {sim} ended {record['state']}: {record['error']}")
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="simbackend-slurm-") as tmp:
        cluster = start_cluster(Path(tmp) / "slurm")
        print(f"single-node Slurm up in {cluster.setup_seconds:.1f} s")
        try:
            with running_backend() as local:
                local_starts = first_steps(local, args.trials)
                local_batch = batch(local, args.batch)
            slurm_args = ("--launcher", "slurm", "--shared-dir", str(Path(tmp) / "shared"),
                          "--slurm-bind-host", "127.0.0.1", "--slurm-poll-interval",
                          POLL_INTERVAL, "--max-running", "0")
            backend = Backend(Path(tmp) / "data", env=cluster.env, args=slurm_args).start()
            try:
                slurm_starts = first_steps(backend, args.trials)
                slurm_batch = batch(backend, args.batch)
            finally:
                backend.cleanup()
        finally:
            cluster.stop()
    print(summary("POST started -> first step, local", local_starts))
    print(summary("POST started -> first step, Slurm", slurm_starts))
    ratio = sorted(slurm_starts)[len(slurm_starts) // 2] / sorted(local_starts)[
        len(local_starts) // 2]
    print(f"Slurm / local (p50): {ratio:.1f}x")
    for name, total in (("local", local_batch), ("Slurm", slurm_batch)):
        print(f"{args.batch} runs of 200 steps POSTed at once, {name:<5}: total {total:6.2f} s, "
              f"{total / args.batch:5.2f} s per run")
    print(f"Slurm / local (batch): {slurm_batch / local_batch:.1f}x "
          f"(squeue every {POLL_INTERVAL} s)")


if __name__ == "__main__":
    main()
