"""The NEST Server API of a NEST session through the backend, side by side with the real
NEST Server 3.10 on loopback, in one run.

    python -m benchmarks.nest_api [--calls 300] [--sessions 8]

1. Per-call latency of ``GET /``, ``Create``, ``GetKernelStatus``, ``GetStatus`` and a
   tiny ``/exec``: NEST Server (it closes every connection) against the backend's
   ``/v1/simulations/<id>/nest`` over one keep-alive connection, and with a new
   connection per call (what ``nest-client`` does: one ``requests.post`` per call).
2. The NEST Server client example (1000 neurons, 1 s) through ``nest-client``, end to end.
3. Retrieving 16k spike events: NEST Server's JSON (through ``/exec``: its ``GetStatus``
   fails), the same JSON through the backend, and ``results/spikes.npz`` of the session.
4. ``--sessions`` clients simulating the example at once, each in its own session,
   against the same runs one after the other on NEST Server (one kernel).
"""
from __future__ import annotations

import argparse
import functools
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import requests
from nest_client import NESTClient

from benchmarks.common import percentile, running_backend
from tests.nest_server import RealNestServer
from tests.support import ROOT, Backend

sys.path.insert(0, str(ROOT / "examples" / "nest_client_session"))
import network  # noqa: E402

#: Neurons recorded for about 16k spike events in 1.3 s of the example's network.
_SPIKE_SOURCE = """
nest.ResetKernel()
nest.SetKernelStatus({"rng_seed": 5})
pg = nest.Create("poisson_generator", 1, {"rate": 6500.})
neurons = nest.Create("iaf_psc_alpha", 1000)
sr = nest.Create("spike_recorder")
nest.Connect(pg, neurons, syn_spec={"weight": 10.})
nest.Connect(neurons, sr)
nest.Simulate(1300.0)
"""
_EVENTS = {"source": "e = nest.GetStatus(nest.NodeCollection([1002]), 'events')[0]",
           "return": "e"}


#: Our backend's ``Authorization`` header (its admin key), set once it has started.
OURS: dict[str, str] = {}

def timed(call: Callable[[], Any], count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return times


def p50_ms(times: list[float]) -> float:
    return percentile(times, 50) * 1000


def latency(real: RealNestServer, ours: str, calls: int) -> list[str]:
    """p50 of each call: NEST Server, ours keep-alive, ours with a connection per call."""
    auth = {"NESTServerAuth": real.token}
    keep = requests.Session()
    keep.trust_env = False
    keep.headers.update(OURS)
    cases = [("GET /", "GET", "/", None),
             ("Create", "POST", "/api/Create", {"model": "iaf_psc_alpha"}),
             ("GetKernelStatus", "POST", "/api/GetKernelStatus", {"keys": "biological_time"}),
             ("GetStatus", "POST", "/api/GetStatus", {"nodes": [1], "keys": "V_m"}),
             ("/exec tiny", "POST", "/exec", {"source": "x = 1", "return": "x"})]
    lines = [f"{'call':<18}{'NEST Server':>14}{'ours keep-alive':>18}{'ours new conn':>16}"
             f"{'ratio':>8}  (p50 ms; ratio: NEST Server / ours keep-alive)"]
    for name, method, path, body in cases:
        theirs = functools.partial(requests.request, method, real.url + path, json=body,
                                   headers=auth)
        mine = functools.partial(keep.request, method, ours + path, json=body)
        mine_fresh = functools.partial(requests.request, method, ours + path, json=body,
                                       headers=OURS)
        for call in (theirs, mine, mine_fresh):
            call()  # warm up
        status = theirs().status_code
        t, k, f = (timed(c, calls) for c in (theirs, mine, mine_fresh))
        note = "" if status == 200 else f"  (NEST Server answers {status})"
        lines.append(f"{name:<18}{p50_ms(t):>14.2f}{p50_ms(k):>18.2f}{p50_ms(f):>16.2f}"
                     f"{p50_ms(t) / p50_ms(k):>8.2f}{note}")
    return lines


def nest_server_run(client: NESTClient, seed: int = network.DEFAULT_SEED) -> int:
    """The example on NEST Server: its GetStatus fails, so n_events comes via /exec."""
    sr = network.simulate(client, seed)
    return client.exec_script(f"n = nest.GetStatus(nest.NodeCollection({sr}), 'n_events')[0]",
                              "n")["data"]


def end_to_end(real: RealNestServer, ours: str, runs: int) -> str:
    theirs = NESTClient(real.url, headers={"NESTServerAuth": real.token})
    mine = NESTClient(ours, headers=OURS)
    t = statistics.median(timed(lambda: nest_server_run(theirs), runs))
    m = statistics.median(timed(lambda: network.run(mine), runs))
    return (f"example via nest-client   NEST Server {t:.3f} s   ours {m:.3f} s   "
            f"ours/theirs {m / t:.3f} (target <= 1.05)")


def spikes(real: RealNestServer, backend: Backend, runs: int) -> list[str]:
    auth = {"NESTServerAuth": real.token}
    sim_id = backend.post("/v1/simulations", json={"kernel": "nest",
                                                   "state": "started"}).json()["id"]
    ours = f"{backend.url}/v1/simulations/{sim_id}/nest"
    for url, headers in ((real.url, auth), (ours, OURS)):
        assert requests.post(url + "/exec", json={"source": _SPIKE_SOURCE},
                             headers=headers).status_code == 200
    count = len(requests.post(real.url + "/exec", json=_EVENTS, headers=auth)
                .json()["data"]["times"])

    def theirs() -> Any:
        return requests.post(real.url + "/exec", json=_EVENTS, headers=auth).json()

    def mine_json() -> Any:
        return requests.post(ours + "/api/GetStatus",
                             json={"nodes": [1002], "keys": "events"}, headers=OURS).json()

    t, j = timed(theirs, runs), timed(mine_json, runs)
    backend.set_state(sim_id, "stopped")
    backend.wait_uploaded(sim_id, timeout=60)
    keep = backend.as_token(backend.token)

    def mine_npz() -> Any:
        data = keep.get(f"{backend.url}/v1/simulations/{sim_id}/results/spikes.npz").content
        return np.load(io.BytesIO(data))["spike_recorder_1002_times"]

    assert len(mine_npz()) == count
    n = timed(mine_npz, runs)
    return [f"{count} spike events        NEST Server JSON {p50_ms(t):.1f} ms   ours JSON "
            f"{p50_ms(j):.1f} ms   ours spikes.npz {p50_ms(n):.2f} ms   "
            f"NEST Server / npz {p50_ms(t) / p50_ms(n):.1f}x (target >= 10x)"]


def concurrent(real: RealNestServer, backend: Backend, sessions: int) -> list[str]:
    theirs = NESTClient(real.url, headers={"NESTServerAuth": real.token})
    began = time.perf_counter()
    expected = [nest_server_run(theirs, seed) for seed in range(1, sessions + 1)]
    sequential = time.perf_counter() - began

    began = time.perf_counter()
    ids = [backend.post("/v1/simulations", json={"kernel": "nest", "state": "started"})
           .json()["id"] for _ in range(sessions)]
    urls = [f"{backend.url}/v1/simulations/{sim_id}/nest" for sim_id in ids]
    for url in urls:
        requests.get(url + "/", headers=OURS)  # answers once the session is ready
    started = time.perf_counter() - began
    got: dict[int, int] = {}

    def client(i: int) -> None:
        got[i] = network.run(NESTClient(urls[i], headers=OURS), i + 1)

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    parallel = time.perf_counter() - began
    assert [got[i] for i in range(sessions)] == expected, "a session gave other spikes"
    for sim_id in ids:
        backend.set_state(sim_id, "stopped")
    return [f"{sessions} runs of the example  NEST Server one after the other {sequential:.2f} s"
            f"   ours in {sessions} sessions at once {parallel:.2f} s   speed-up "
            f"{sequential / parallel:.2f}x (the same n_events, seed by seed)",
            f"                          starting the {sessions} sessions took {started:.2f} s "
            f"(a process and a NEST import each, before the runs)"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nest-server-bench-") as tmp, \
            running_backend() as backend:
        real = RealNestServer(Path(tmp) / "nest-server.log").start()
        OURS.update(backend.auth_headers())
        try:
            sim_id = backend.post("/v1/simulations", json={"kernel": "nest",
                                                           "state": "started"}).json()["id"]
            ours = f"{backend.url}/v1/simulations/{sim_id}/nest"
            requests.get(ours + "/", headers=OURS)  # waits until the session is ready
            lines = ["NEST Server API: NEST Server 3.10 (gunicorn, 1 worker) vs a NEST session "
                     "through the backend, loopback", *latency(real, ours, args.calls),
                     end_to_end(real, ours, args.runs)]
            backend.set_state(sim_id, "stopped")
            lines += spikes(real, backend, args.runs * 4)
            lines += concurrent(real, backend, args.sessions)
        finally:
            real.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
