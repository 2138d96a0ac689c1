"""Pause/stop latency while a 1 ms-step run is going, and POST -> first step.

    python benchmarks/control_latency.py [--trials 50]

Pause: PUT paused -> the simulation server reports paused (run_loop blocked).
Stop: PUT stopped -> the server acknowledged (stopped) and -> its process exited.
Start: POST {"state": "started"} -> the first kernel step (sim_time > 0).
"""
from __future__ import annotations

import argparse
import time

from benchmarks.common import running_backend, summary
from tests.support import loop_experiment

POLL = 0.001


def wait(predicate, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(POLL)  # leave the CPU to the backend and the simulation
    return time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    with running_backend() as backend:
        backend.upload("bench", loop_experiment(sim_time=1e12))

        # -- pause and resume on one busy run (1 ms steps, unpaced: the worst case)
        sim = backend.create("bench", state="started")["id"]
        wait(lambda: backend.status(sim)["sim_time"] > 0)
        pause, pause_put, resume = [], [], []
        for _ in range(args.trials):
            began = time.monotonic()
            backend.set_state(sim, "paused")
            pause_put.append(time.monotonic() - began)
            pause.append(wait(lambda: backend.status(sim)["server_state"] == "paused") - began)
            began = time.monotonic()
            backend.set_state(sim, "started")
            resume.append(wait(lambda: backend.status(sim)["server_state"] == "started") - began)
        backend.set_state(sim, "stopped")

        # -- stop and start, one fresh simulation per trial
        stop_ack, stop_exit, first_step = [], [], []
        for _ in range(args.trials):
            began = time.monotonic()
            sim = backend.create("bench", state="started")["id"]
            first_step.append(wait(lambda: backend.status(sim)["sim_time"] > 0) - began)
            began = time.monotonic()
            backend.set_state(sim, "stopped")
            stop_ack.append(wait(lambda: backend.status(sim)["server_state"] == "stopped")
                            - began)
            stop_exit.append(wait(lambda: backend.record(sim)["exit_code"] is not None) - began)

    print(f"control latency, {args.trials} trials each, 1 ms steps running flat out")
    print(summary("PUT paused (HTTP round trip)", pause_put))
    print(summary("PUT paused -> server paused", pause, 50))
    print(summary("PUT started -> server running again", resume, 50))
    print(summary("PUT stopped -> server stopped", stop_ack, 50))
    print(summary("PUT stopped -> process exited", stop_exit))
    print(summary("POST started -> first step", first_step, 1000))


if __name__ == "__main__":
    main()
