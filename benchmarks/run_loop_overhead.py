"""What ``run_loop`` costs over calling the engine's step directly, in one process.

    python benchmarks/run_loop_overhead.py

Blocks of A (engine.step in a bare loop) and B (sim.run_loop(1) through the kernel)
alternate so both see the same machine; medians of the blocks are compared.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import per_step  # noqa: E402
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


def measure(cost: float, steps: int, blocks: int) -> tuple[float, float]:
    engine = Busy(cost)
    loop = RunLoop(Kernel({"busy": engine}, [], 1.0), sim_timeout=1e15, real_timeout=1e9)
    loop.release()
    direct = lambda: engine.step(0.0, 1.0)  # noqa: E731
    through = loop.run_loop
    a, b = [], []
    for _ in range(blocks):
        a.append(per_step(direct, steps))
        b.append(per_step(through, steps))
    return statistics.median(a), statistics.median(b)


def main() -> None:
    print("run_loop overhead (median of alternating blocks)")
    for cost, steps in ((0.0, 200_000), (100e-6, 2_000), (1e-3, 300)):
        a, b = measure(cost, steps, blocks=15)
        overhead = b - a
        target = " target <=2%: " + ("OK" if overhead / a <= 0.02 else "MISSED") \
            if cost >= 100e-6 else ""
        print(f"step cost {cost * 1e6:7.0f} us: direct {a * 1e6:9.2f} us/step, run_loop "
              f"{b * 1e6:9.2f} us/step, overhead {overhead * 1e6:6.2f} us "
              f"({overhead / a * 100:6.2f} %){target}")


if __name__ == "__main__":
    main()
