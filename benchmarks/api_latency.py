"""``GET /v1/simulations/<id>`` latency with 10 simulations running.

    python benchmarks/api_latency.py [--requests 2000]

Measured over one keep-alive session (how clients should talk to the backend) and,
side by side, with a new connection per request (how NEST Server answers).
"""
from __future__ import annotations

import argparse
import time

import requests

from benchmarks.common import running_backend, summary
from tests.support import loop_experiment, wait_until


def timed(session_factory, url: str, count: int) -> list[float]:
    times = []
    session = session_factory()
    for _ in range(count):
        began = time.perf_counter()
        response = session.get(url)
        times.append(time.perf_counter() - began)
        assert response.status_code == 200
        if session_factory is not requests.Session:
            session = session_factory()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with running_backend() as backend:
        backend.upload("bench", loop_experiment(sim_time=1e12))
        sims = [backend.create("bench", params={"step_sleep": 0.001}, state="started")["id"]
                for _ in range(10)]
        wait_until(lambda: all(backend.status(s)["sim_time"] > 0 for s in sims), 60,
                   "all ten to run")
        url = f"{backend.url}/v1/simulations/{sims[0]}"
        timed(requests.Session, url, 100)  # warm up
        keep_alive = timed(requests.Session, url, args.requests)

        def fresh() -> requests.Session:
            session = requests.Session()
            session.headers["Connection"] = "close"
            return session

        closing = timed(fresh, url, args.requests // 4)
        status = timed(requests.Session, url + "/status", args.requests // 4)
        for sim in sims:
            backend.set_state(sim, "stopped")
    print("API latency with 10 simulations running")
    print(summary("GET record, keep-alive", keep_alive))
    ka = sorted(keep_alive)
    p50, p99 = ka[len(ka) // 2] * 1000, ka[int(len(ka) * 0.99)] * 1000
    print(f"{'':44} targets p50<=3 ms: {'OK' if p50 <= 3 else 'MISSED'}, "
          f"p99<=15 ms: {'OK' if p99 <= 15 else 'MISSED'}")
    print(summary("GET record, new connection each", closing))
    print(summary("GET status (live from simserver)", status))
    print(f"keep-alive vs new connection, p50 ratio: "
          f"{sorted(closing)[len(closing) // 2] / ka[len(ka) // 2]:.2f}x")


if __name__ == "__main__":
    main()
