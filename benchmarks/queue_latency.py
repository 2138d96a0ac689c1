"""From a slot freeing to the next queued run's first step, against a run started on a
free host, side by side (python engines).

    python -m benchmarks.queue_latency [--trials 30] [--slots 2]

The host lends ``--slots`` cores; as many long runs fill it and a few more wait in the
queue. Each trial stops the oldest running run (the slot frees the moment the stop is
accepted) and times the next queued run: admitted (its record leaves ``queued``) and
its first kernel step (``sim_time > 0``). A new run is queued to keep the queue full.
The baseline is ``POST {"state": "started"}`` -> first step on a host with room.
First steps are seen on the backend's event stream (``RunEvents``); admissions are polled
from the record.
"""
from __future__ import annotations

import argparse
import time
from collections import deque

from benchmarks.common import Backend, RunEvents, running_backend, summary, wait
from tests.support import loop_experiment

SLOW = {"step_sleep": 0.002}
_QUEUED = 3


def baseline(backend: Backend, seen: RunEvents, trials: int) -> list[float]:
    """POST started -> first step, with a free slot, ``trials`` times."""
    found = []
    for _ in range(trials):
        began = time.monotonic()
        sim = backend.create("bench", state="started", params=SLOW)["id"]
        found.append(seen.first_step(sim, 60) - began)
        backend.set_state(sim, "stopped")
        wait(lambda sim=sim: backend.record(sim)["exit_code"] is not None, 60)
    return found


def through_the_queue(backend: Backend, seen: RunEvents, trials: int,
                      slots: int) -> dict[str, list[float]]:
    running = deque(backend.create("bench", state="started", params=SLOW)["id"]
                    for _ in range(slots))
    for sim in running:
        seen.first_step(sim, 60)
    queued = deque(backend.create("bench", state="started", params=SLOW)["id"]
                   for _ in range(_QUEUED))
    assert all(backend.record(s)["state"] == "queued" for s in queued), "the host is not full"
    found: dict[str, list[float]] = {"put": [], "admitted": [], "first_step": []}
    for _ in range(trials):
        freed, nxt = running.popleft(), queued.popleft()
        began = time.monotonic()
        backend.set_state(freed, "stopped")
        found["put"].append(time.monotonic() - began)
        found["admitted"].append(
            wait(lambda sim=nxt: backend.record(sim)["state"] != "queued", 60) - began)
        found["first_step"].append(seen.first_step(nxt, 60) - began)
        running.append(nxt)
        queued.append(backend.create("bench", state="started", params=SLOW)["id"])
        wait(lambda sim=freed: backend.record(sim)["exit_code"] is not None, 60)
    for sim in [*running, *queued]:
        backend.set_state(sim, "stopped")
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()
    with running_backend("--host-threads", str(args.slots)) as backend, \
            RunEvents(backend) as seen:
        backend.upload("bench", loop_experiment(sim_time=1e12))
        queue = through_the_queue(backend, seen, args.trials, args.slots)
        free = baseline(backend, seen, args.trials)
    print(f"queue latency, {args.trials} trials, {args.slots} slots full, {_QUEUED} queued")
    print(summary("PUT stopped (HTTP round trip)", queue["put"]))
    print(summary("slot freed -> next run admitted", queue["admitted"], 100))
    print(summary("slot freed -> next run's first step", queue["first_step"], 300))
    print(summary("POST started -> first step (free host)", free))
    ratio = sorted(queue["first_step"])[len(free) // 2] / sorted(free)[len(free) // 2]
    print(f"p50 ratio, through the queue / on a free host: {ratio:.2f}")


if __name__ == "__main__":
    main()
