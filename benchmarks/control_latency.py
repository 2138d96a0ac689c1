"""Pause/stop latency while a 1 ms-step run is going, and POST -> first step.

    python benchmarks/control_latency.py [--trials 50]

Pause: PUT paused -> the simulation server reports paused (run_loop blocked).
Stop: PUT stopped -> the server acknowledged (stopped) and -> its process exited.
Start: POST {"state": "started"} -> the first kernel step (sim_time > 0).

The server's states and first steps are seen on the backend's event stream, as a client
follows them (``RunEvents``); the process's exit is polled from the record.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import Backend, RunEvents, running_backend, summary, wait
from tests.support import loop_experiment


def pause_resume(backend: Backend, seen: RunEvents, experiment: str, trials: int,
                 **fields: Any) -> dict[str, list[float]]:
    """Pause and resume one busy run ``trials`` times; seconds per phase.

    ``fields`` go into the POST (``params``, ``timeout``).
    """
    sim = backend.create(experiment, state="started", **fields)["id"]
    seen.first_step(sim, 120)
    found: dict[str, list[float]] = {"pause_put": [], "pause": [], "resume": []}
    for _ in range(trials):
        began = time.monotonic()
        backend.set_state(sim, "paused")
        found["pause_put"].append(time.monotonic() - began)
        found["pause"].append(seen.server_state(sim, "paused", began) - began)
        began = time.monotonic()
        backend.set_state(sim, "started")
        found["resume"].append(seen.server_state(sim, "started", began) - began)
    backend.set_state(sim, "stopped")
    return found


def stop_start(backend: Backend, seen: RunEvents, experiment: str, trials: int,
               **fields: Any) -> dict[str, list[float]]:
    """Start a fresh run and stop it once it advances, ``trials`` times."""
    found: dict[str, list[float]] = {"first_step": [], "stop_ack": [], "stop_exit": []}
    for _ in range(trials):
        began = time.monotonic()
        sim = backend.create(experiment, state="started", **fields)["id"]
        found["first_step"].append(seen.first_step(sim, 120) - began)
        began = time.monotonic()
        backend.set_state(sim, "stopped")
        found["stop_ack"].append(seen.server_state(sim, "stopped", began) - began)
        found["stop_exit"].append(
            wait(lambda sim=sim: backend.record(sim)["exit_code"] is not None) - began)
    return found


def report(paused: dict[str, list[float]], stopped: dict[str, list[float]],
           first_step_target: float | None = 1000) -> None:
    print(summary("PUT paused (HTTP round trip)", paused["pause_put"]))
    print(summary("PUT paused -> server paused", paused["pause"], 50))
    print(summary("PUT started -> server running again", paused["resume"], 50))
    print(summary("PUT stopped -> server stopped", stopped["stop_ack"], 50))
    print(summary("PUT stopped -> process exited", stopped["stop_exit"]))
    print(summary("POST started -> first step", stopped["first_step"], first_step_target))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    with running_backend() as backend, RunEvents(backend) as seen:
        backend.upload("bench", loop_experiment(sim_time=1e12))
        paused = pause_resume(backend, seen, "bench", args.trials)  # unpaced: the worst case
        stopped = stop_start(backend, seen, "bench", args.trials)
    print(f"control latency, {args.trials} trials each, 1 ms steps running flat out")
    report(paused, stopped)


if __name__ == "__main__":
    main()
