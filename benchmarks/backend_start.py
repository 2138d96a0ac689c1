"""Starting and stopping the backend: what a restart costs an operator.

    python -m benchmarks.backend_start [--runs 20] [--baseline REV]

``simbackend serve`` as a real process in a fresh data dir (authentication on, no warm
pool, the default 32 request and 256 event-stream workers), ``--runs`` times:

1. start: spawn -> ``/health`` answers 200 (polled every millisecond);
2. threads: the process's threads at that moment;
3. stop: SIGTERM -> the process has exited (its graceful stop, interpreter exit
   included), and its exit code (0 expected).

With ``--baseline REV`` the same for commit ``REV`` (``git archive``, run from its own
code), a start and stop of each in turn, and the ratios now / REV.

The machine is shared: compare the columns of one run, not runs of different days.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

from benchmarks.common import checkout, percentile, wait
from tests.support import ROOT

ARGS = ("--port", "0", "--examples-dir", "", "--pool-nest", "0", "--pool-python", "0")


def start_and_stop(root: Path, data: Path) -> dict[str, float]:
    """Seconds to start (spawn -> /health 200) and to stop (SIGTERM -> exited), threads."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    with open(data.parent / f"{data.name}.log", "ab") as log:
        began = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve",
                                 "--data-dir", str(data), *ARGS], cwd=root, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        http = requests.Session()
        http.trust_env = False
        address = data / "backend.json"

        def healthy() -> bool:
            try:
                url = json.loads(address.read_text())["url"]
                return http.get(f"{url}/health", timeout=1).status_code == 200
            except (OSError, ValueError, KeyError, requests.RequestException):
                return False

        ready = wait(healthy, 30)
        threads = psutil.Process(proc.pid).num_threads()
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # wait() without a timeout blocks in waitpid; with one it polls in sleeps of up
        # to 50 ms, which would round the figure.
        guard = threading.Timer(30, proc.kill)
        guard.start()
        try:
            code = proc.wait()
        finally:
            guard.cancel()
        return {"start": ready - began, "stop": time.monotonic() - stopping,
                "threads": threads, "exit": code}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def measure(trees: dict[str, Path], runs: int) -> dict[str, list[dict[str, float]]]:
    """``runs`` starts and stops of each tree, turn about, each in a fresh data dir."""
    found: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="backend-start-") as tmp:
        for run in range(runs):
            for name, root in trees.items():
                found[name].append(start_and_stop(root, Path(tmp) / f"{name}-{run}"))
    return found


def report(found: dict[str, list[dict[str, float]]]) -> None:
    print("simbackend serve: spawn -> /health 200, SIGTERM -> exited "
          "(fresh data dir, no pool, authentication on)")
    for name, rows in found.items():
        starts = [r["start"] * 1e3 for r in rows]
        stops = [r["stop"] * 1e3 for r in rows]
        codes = sorted({r["exit"] for r in rows})
        print(f"  {name:<10} n={len(rows):<3} start p50 {percentile(starts, 50):6.1f} ms "
              f"p99 {percentile(starts, 99):6.1f} ms   stop p50 {percentile(stops, 50):6.1f} ms "
              f"p99 {percentile(stops, 99):6.1f} ms   threads at start "
              f"{statistics.median(r['threads'] for r in rows):.0f}   exit codes {codes}")
    if len(found) == 2:
        (now, ours), (rev, theirs) = found.items()
        for what in ("start", "stop"):
            ratio = (statistics.median(r[what] for r in ours)
                     / statistics.median(r[what] for r in theirs))
            print(f"  {what} {now} / {rev}: {ratio:5.2f}x")
        restart = (statistics.median(r["start"] + r["stop"] for r in ours)
                   / statistics.median(r["start"] + r["stop"] for r in theirs))
        print(f"  restart (stop + start) {now} / {rev}: {restart:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--baseline", metavar="REV",
                        help="also measure commit REV, turn about with this checkout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="backend-start-tree-") as tmp:
        trees = {"now": ROOT}
        if args.baseline:
            trees[args.baseline] = checkout(args.baseline, Path(tmp) / "tree")
        report(measure(trees, args.runs))


if __name__ == "__main__":
    main()
