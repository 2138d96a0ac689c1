"""What ``run_loop`` costs over calling the engine's step directly, in one process.

    python benchmarks/run_loop_overhead.py

Blocks of A (engine.step in a bare loop), B (sim.run_loop(1) through the kernel) and
C (the same, publishing each step to a live status in shared memory, as a simulation
server does) alternate so all see the same machine; medians of the blocks are compared.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import per_step  # noqa: E402
from lifecycle.live import LiveStatusWriter  # noqa: E402
from simserver.engines import Engine  # noqa: E402
from simserver.kernel import Kernel  # noqa: E402
from simserver.runloop import RunLoop  # noqa: E402


class Busy(Engine):
    """A step that spins for ``cost`` seconds of wall time."""

    def __init__(self, cost: float) -> None:
        super().__init__("busy", {}, Path("."))
        self.cost = cost

    def step(self, t: float, dt: float) -> None:
        end = time.perf_counter() + self.cost
        while time.perf_counter() < end:
            pass


def measure(cost: float, steps: int, blocks: int, live_dir: Path) -> tuple[float, ...]:
    engine = Busy(cost)
    loops = [RunLoop(Kernel({"busy": engine}, [], 1.0), sim_timeout=1e15, real_timeout=1e9,
                     live=live) for live in (None, LiveStatusWriter(live_dir))]
    for loop in loops:
        loop.release()
    calls = [lambda: engine.step(0.0, 1.0)] + [loop.run_loop for loop in loops]
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(blocks):
        for call, seen in zip(calls, times, strict=True):
            seen.append(per_step(call, steps))
    return tuple(statistics.median(seen) for seen in times)


def main() -> None:
    print("run_loop overhead (median of alternating blocks)")
    with tempfile.TemporaryDirectory() as live_dir:
        for cost, steps in ((0.0, 200_000), (100e-6, 2_000), (1e-3, 300)):
            a, b, c = measure(cost, steps, blocks=15, live_dir=Path(live_dir))
            overhead = c - a
            target = " target <=2%: " + ("OK" if overhead / a <= 0.02 else "MISSED") \
                if cost >= 100e-6 else ""
            print(f"step cost {cost * 1e6:7.0f} us: direct {a * 1e6:9.2f} us/step, "
                  f"run_loop {b * 1e6:9.2f}, with live status {c * 1e6:9.2f} us/step "
                  f"(publishing {(c - b) * 1e6:5.2f} us); overhead {overhead * 1e6:6.2f} us "
                  f"({overhead / a * 100:6.2f} %){target}")


if __name__ == "__main__":
    main()
