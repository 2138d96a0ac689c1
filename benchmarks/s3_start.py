"""A run's start on S3 storage: what the storage round trips cost before the first step.

    python -m benchmarks.s3_start [--trials 10] [--baseline REV]

A moto S3 server with the delaying proxy of :mod:`benchmarks.latency_proxy` in front
(10 ms each way: 20 ms per request, as object storage a few hops away), and a backend
on it with a warm pool of two python servers. Each trial uploads a new version of a
small experiment (a counter engine and a loop script), then

1. POSTs a run of it, started: the version's first run (the next run after an upload,
   in an edit, upload, run loop), POST -> first step;
2. POSTs a second run of the same version: POST -> first step.

Beside each, the storage requests that named the experiment while the run started
(from moto's request log): the look for the current version, experiment.json, the
main script, the fetch of its files. The backend keeps a copy of the versions it
uploads and answers a run's checks from it, so a run asks storage only which version
is current (once at the POST, once at the launch).

With ``--baseline REV`` a backend of commit REV (``git archive``) runs beside this
checkout's on the same server, a trial of each in turn (``c0e23ad``: the last commit
that fetched a version it had just uploaded, and read experiment.json and looked for
the main script in storage at every POST). Medians of ``--trials``.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import Backend, checkout, wait
from benchmarks.storage_throughput import ONE_WAY_DELAY, latency_proxy
from tests.support import MotoServer, aws_env, loop_experiment

POOL = ("--pool-nest", "0", "--pool-python", "2")


def storage_requests(moto: MotoServer, since: int, experiment: str) -> int:
    """Requests moto logged after offset ``since`` that named the experiment's keys."""
    log = moto.log_path.read_text()[since:]
    return sum(f"/experiments/{experiment}/" in line and ('"GET ' in line or '"HEAD ' in line)
               for line in log.splitlines())


def first_step(backend: Backend, moto: MotoServer) -> tuple[float, int]:
    """Seconds from POST to the run's first step, and the storage requests meanwhile."""
    wait(lambda: backend.get("/").json()["pool"]["python"]["idle"] == 2, 60)
    since = len(moto.log_path.read_text())
    began = time.monotonic()
    sim = backend.create("flow", state="started")["id"]
    took = wait(lambda: backend.status(sim)["sim_time"] > 0, 60) - began
    requests = storage_requests(moto, since, "flow")
    backend.set_state(sim, "stopped")
    wait(lambda: backend.record(sim)["exit_code"] is not None, 60)
    return took, requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--baseline", metavar="REV",
                        help="also run a backend of commit REV beside this one, e.g. c0e23ad")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="simbackend-bench-") as tmp:
        work = Path(tmp)
        moto = MotoServer(work / "moto.log").start()
        backends: dict[str, Backend] = {}
        try:
            with latency_proxy(moto.endpoint, ONE_WAY_DELAY) as proxied:
                sides = {"now": None}
                if args.baseline:
                    sides[args.baseline] = checkout(args.baseline, work / "tree")
                for name, tree in sides.items():
                    bucket = f"bench-{uuid.uuid4().hex[:8]}"
                    moto.client().create_bucket(Bucket=bucket)
                    env = {**aws_env(proxied), "SIMBACKEND_STORAGE": f"s3://{bucket}/lab"}
                    if tree is None:
                        backends[name] = Backend(work / name, args=POOL, env=env)
                    else:  # its own code on the path, for its simulation servers too
                        backends[name] = Backend(work / name, args=POOL, root=tree,
                                                 env={**env, "PYTHONPATH": str(tree)})
                    backends[name].start()
                found = {name: {"first": [], "second": [], "first_requests": [],
                                "second_requests": []} for name in backends}
                for trial in range(args.trials):
                    for name, backend in backends.items():
                        backend.upload("flow", loop_experiment(sim_time=1e9,
                                                               description=f"trial {trial}"))
                        for run in ("first", "second"):
                            took, requests = first_step(backend, moto)
                            found[name][run].append(took)
                            found[name][f"{run}_requests"].append(requests)
        finally:
            for backend in backends.values():
                backend.cleanup()
            moto.stop()
    print(f"A run's start on S3 ({2 * ONE_WAY_DELAY * 1000:.0f} ms per request), POST -> "
          f"first step, median of {args.trials} trials")
    for name, figures in found.items():
        for run, label in (("first", "first run of a version just uploaded"),
                           ("second", "second run of the same version")):
            print(f"   {name:>8}: {label:<38} {statistics.median(figures[run]) * 1e3:7.1f} ms"
                  f"  ({statistics.median(figures[f'{run}_requests']):.0f} storage requests"
                  f" for the experiment)")
    if args.baseline:
        for run in ("first", "second"):
            ratio = statistics.median(found["now"][run]) / \
                statistics.median(found[args.baseline][run])
            print(f"   {run} run: now / {args.baseline} {ratio:5.2f}x")


if __name__ == "__main__":
    main()
