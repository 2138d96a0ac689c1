"""What the benchmarks share: a real backend in a temporary data dir, and statistics."""
from __future__ import annotations

import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import ROOT, Backend  # noqa: E402  (the harness of the tests)

POLL = 0.001


@contextmanager
def running_backend(*args: str) -> Iterator[Backend]:
    with tempfile.TemporaryDirectory(prefix="simbackend-bench-") as tmp:
        backend = Backend(Path(tmp) / "data", args=args).start()
        try:
            yield backend
        finally:
            backend.cleanup()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(name: str, seconds: list[float], target_ms: float | None = None) -> str:
    ms = [s * 1000 for s in seconds]
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    line = (f"{name:<44} n={len(ms):<5} p50={p50:8.2f} ms  p99={p99:8.2f} ms  "
            f"mean={statistics.fmean(ms):8.2f} ms")
    if target_ms is not None:
        line += f"  target p99<={target_ms:g} ms: {'OK' if p99 <= target_ms else 'MISSED'}"
    return line


def wait(predicate: Callable[[], object], timeout: float = 30.0) -> float:
    """Poll ``predicate`` every millisecond; return the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(POLL)  # leave the CPU to the backend and the simulation
    return time.monotonic()


def per_step(func: Callable[[], object], steps: int,
             clock: Callable[[], float] = time.perf_counter) -> float:
    """Mean seconds (of ``clock``: wall time by default) of one call of ``func``."""
    began = clock()
    for _ in range(steps):
        func()
    return (clock() - began) / steps


def checkout(rev: str, into: Path) -> Path:
    """The files of commit ``rev`` of this repository, unpacked into ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True, timeout=120).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into
