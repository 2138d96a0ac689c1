"""What the benchmarks share: a real backend in a temporary data dir, and statistics."""
from __future__ import annotations

import io
import math
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client.sse import parse  # noqa: E402
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


class RunEvents:
    """When each run of ``backend`` was first seen moving (a ``status`` event with
    ``sim_time`` > 0), and when its server reached each state (``server_state`` events),
    from the backend's event stream of every simulation (``GET /v1/events``), read on a
    thread of its own: a follower learns of a run's first step, or of a pause taking
    effect, as soon as the simulation server tells the backend, as a dashboard does.
    Polling ``/status`` every millisecond instead took most of a core of a 2-core
    machine (the client and the backend) from the run it watched: its first step came
    ~20 ms later.

    Open it before the runs it is to see start; close it (or use it as a context)."""

    def __init__(self, backend: Backend) -> None:
        self._http = requests.Session()
        self._http.headers.update(backend.auth_headers())
        self._http.trust_env = False
        self._answer = self._http.get(backend.url + "/v1/events", stream=True,
                                      timeout=(5, 600))
        self._answer.raise_for_status()
        self._moving: dict[str, float] = {}
        self._states: dict[str, list[tuple[str, float]]] = {}
        self._cond = threading.Condition()
        threading.Thread(target=self._read, name="run-events", daemon=True).start()

    def _read(self) -> None:
        try:
            for event in parse(self._answer):
                now, sim = time.monotonic(), str(event.sim_id)
                with self._cond:
                    if event.type == "status" and (event.data.get("sim_time") or 0) > 0:
                        self._moving.setdefault(sim, now)
                    elif event.type == "server_state":
                        self._states.setdefault(sim, []).append((event.data["state"], now))
                    else:
                        continue
                    self._cond.notify_all()
        except (requests.RequestException, ValueError, AttributeError):
            pass  # closed (a closed answer may also fail inside urllib3)

    def first_step(self, sim_id: str, timeout: float) -> float:
        """The monotonic time run ``sim_id`` was first seen moving."""
        with self._cond:
            if not self._cond.wait_for(lambda: sim_id in self._moving, timeout):
                raise TimeoutError(f"run {sim_id} was not seen moving in {timeout:g} s")
            return self._moving[sim_id]

    def server_state(self, sim_id: str, state: str, since: float,
                     timeout: float = 30.0) -> float:
        """The monotonic time the server of ``sim_id`` was first told to be in ``state``
        at or after ``since``."""
        def found() -> float | None:
            return next((at for s, at in self._states.get(sim_id, ())
                         if s == state and at >= since), None)

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"the server of {sim_id} was not told {state} in "
                                   f"{timeout:g} s")
            return found()

    def close(self) -> None:
        self._answer.close()
        self._http.close()

    def __enter__(self) -> RunEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median_interval(values: list[float],
                    confidence: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free interval for the median of what ``values`` sample, and its
    coverage: the order statistics ``x(j)`` and ``x(n+1-j)`` with the largest ``j`` whose
    coverage, 1 - 2 P(Binomial(n, 1/2) < j), is still at least ``confidence`` (for nine
    values: the 2nd and 8th, 96.1 %); the least and the greatest when even those cover
    less."""
    ordered, n = sorted(values), len(values)

    def coverage(j: int) -> float:
        return 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2 ** n

    j = 1
    while j + 1 <= n // 2 and coverage(j + 1) >= confidence:
        j += 1
    return ordered[j - 1], ordered[n - j], coverage(j)


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
