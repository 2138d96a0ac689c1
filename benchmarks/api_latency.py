"""``GET /v1/simulations/<id>`` latency with 10 simulations running, with authentication
on (an API key, the default) and off (``--no-auth``), side by side.

    python benchmarks/api_latency.py [--requests 2000]

Measured over one keep-alive session (how clients should talk to the backend) and,
side by side, with a new connection per request (how NEST Server answers). The two
backends run at once and are measured in alternating rounds, so both see the same load.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import ExitStack

import requests

from benchmarks.common import percentile, running_backend, summary
from tests.support import Backend, loop_experiment, wait_until

#: Requests per alternating round of the authentication comparison.
ROUND = 100
#: What authentication may add to the median (ms).
AUTH_TARGET_MS = 0.3


def timed(session_factory: Callable[[], requests.Session], url: str,
          count: int, fresh: bool = False) -> list[float]:
    times = []
    session = session_factory()
    for _ in range(count):
        began = time.perf_counter()
        response = session.get(url)
        times.append(time.perf_counter() - began)
        assert response.status_code == 200, response.text
        if fresh:
            session = session_factory()
    return times


def start_ten(backend: Backend) -> list[str]:
    backend.upload("bench", loop_experiment(sim_time=1e12))
    sims = [backend.create("bench", params={"step_sleep": 0.001}, state="started")["id"]
            for _ in range(10)]
    wait_until(lambda: all(backend.status(s)["sim_time"] > 0 for s in sims), 60,
               "all ten to run")
    return sims


def compare(on: Backend, off: Backend, url_on: str, url_off: str,
            count: int) -> tuple[list[float], list[float]]:
    """Keep-alive latencies of both, in alternating rounds of :data:`ROUND` requests."""
    with_auth, without = on.as_token(on.token), off.as_token(None)
    timed(lambda: with_auth, url_on, 100)  # warm up
    timed(lambda: without, url_off, 100)
    times_on: list[float] = []
    times_off: list[float] = []
    for _ in range(max(1, count // ROUND)):
        times_off += timed(lambda: without, url_off, ROUND)
        times_on += timed(lambda: with_auth, url_on, ROUND)
    return times_on, times_off


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with ExitStack() as stack:
        on = stack.enter_context(running_backend())
        off = stack.enter_context(running_backend("--no-auth"))
        sims_on, sims_off = start_ten(on), start_ten(off)
        url = f"{on.url}/v1/simulations/{sims_on[0]}"
        keep_alive, without = compare(on, off, url, f"{off.url}/v1/simulations/{sims_off[0]}",
                                      args.requests)

        def fresh() -> requests.Session:
            session = on.as_token(on.token)
            session.headers["Connection"] = "close"
            return session

        closing = timed(fresh, url, args.requests // 4, fresh=True)
        status = timed(lambda: on.as_token(on.token), url + "/status", args.requests // 4)
        for backend, sims in ((on, sims_on), (off, sims_off)):
            for sim in sims:
                backend.set_state(sim, "stopped")
    report(keep_alive, without, closing, status)


def report(keep_alive: list[float], without: list[float], closing: list[float],
           status: list[float]) -> None:
    print("API latency with 10 simulations running (authentication on: an API key)")
    print(summary("GET record, keep-alive", keep_alive))
    p50, p99 = percentile(keep_alive, 50) * 1000, percentile(keep_alive, 99) * 1000
    print(f"{'':44} targets p50<=3 ms: {'OK' if p50 <= 3 else 'MISSED'}, "
          f"p99<=15 ms: {'OK' if p99 <= 15 else 'MISSED'}")
    print(summary("GET record, keep-alive, --no-auth", without))
    added = p50 - percentile(without, 50) * 1000
    print(f"{'':44} authentication adds p50 {added:+.3f} ms, p99 "
          f"{p99 - percentile(without, 99) * 1000:+.3f} ms; target p50 < {AUTH_TARGET_MS} ms: "
          f"{'OK' if added < AUTH_TARGET_MS else 'MISSED'}")
    print(summary("GET record, new connection each", closing))
    print(summary("GET status (live from simserver)", status))
    print(f"keep-alive vs new connection, p50 ratio: "
          f"{percentile(closing, 50) / percentile(keep_alive, 50):.2f}x")


if __name__ == "__main__":
    main()
