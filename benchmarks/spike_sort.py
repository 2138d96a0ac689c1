"""What ordering a run's spikes costs at its end, against lexsort and an earlier commit.

    python -m benchmarks.spike_sort [--baseline REV] [--seconds 1 10]

The events are the Brunel example's excitatory recorder (800 neurons, ~51,000 spikes a
second of biology), read out of NEST once, in the order NEST recorded them. Each way
of ordering them by time, then sender, is timed in turn on the same events (blocks
alternating, median of each), and each result is checked against ``np.lexsort``'s.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import checkout  # noqa: E402
from benchmarks.nest_overhead import BRUNEL, PARAMS, load_module  # noqa: E402
from simserver.spikes import sorted_spikes  # noqa: E402


def recorded_events(nest: Any, seconds: float) -> dict[str, np.ndarray]:
    build = load_module("brain.py", BRUNEL).build
    nest.ResetKernel()
    nest.set(rng_seed=12345, local_num_threads=1, resolution=0.1)
    nodes = build(nest, PARAMS)
    nest.Simulate(seconds * 1000.0)
    return nodes["ex_spikes"].get("events")


def baseline_sort(rev: str, into: Path) -> Callable[[list[dict]], Any]:
    """``sorted_spikes`` of commit ``rev``."""
    path = checkout(rev, into) / "simserver" / "spikes.py"
    spec = importlib.util.spec_from_file_location(f"spikes_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.sorted_spikes


def lexsorted(events: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    times = np.concatenate([np.asarray(e["times"], dtype=np.float64) for e in events])
    senders = np.concatenate([np.asarray(e["senders"], dtype=np.int64) for e in events])
    order = np.lexsort((senders, times))
    return times[order], senders[order]


def timed(ways: dict[str, Callable], events: list[dict], blocks: int) -> dict[str, float]:
    expected = lexsorted(events)
    seen: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(blocks):
        for name, way in ways.items():
            began = time.perf_counter()
            times, senders = way(events)
            seen[name].append(time.perf_counter() - began)
            assert np.array_equal(times, expected[0]) and \
                np.array_equal(senders, expected[1]), f"{name}: not lexsort's order"
    return {name: statistics.median(values) for name, values in seen.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="17e5b13",
                        help="the commit to set the code against (default: %(default)s)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 10.0],
                        help="seconds of biology simulated for each set of events")
    parser.add_argument("--blocks", type=int, default=21)
    args = parser.parse_args()
    import nest

    nest.verbosity = nest.VerbosityLevel.ERROR
    with tempfile.TemporaryDirectory() as tmp:
        ways = {"np.lexsort": lexsorted, f"at {args.baseline}": baseline_sort(args.baseline,
                                                                              Path(tmp)),
                "now": sorted_spikes}
        print("Ordering one recorder's spikes by time, then sender (median of "
              f"{args.blocks} blocks, each way on the same events)")
        for seconds in args.seconds:
            events = [recorded_events(nest, seconds)]
            found = timed(ways, events, args.blocks)
            print(f"  {seconds:g} s of biology, {len(events[0]['times'])} spikes")
            for name, took in found.items():
                print(f"    {name:22s} {took * 1e3:8.2f} ms  now / this "
                      f"{found['now'] / took:5.2f}x")


if __name__ == "__main__":
    main()
