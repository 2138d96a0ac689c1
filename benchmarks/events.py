"""Live events: how soon a state change reaches an SSE client, and what many subscribers
cost the backend.

    python -m benchmarks.events [--rounds 100] [--subscribers 200] [--window 10]

1. Latency, with 1 subscriber and again with N more reading the same simulation:
   the simulation server's own state change (its event's timestamp) to the SSE client
   receiving ``server_state``, and ``PUT .../state`` to the client receiving ``state``.
2. Cost: the backend's CPU (user+system, % of one core) and RSS over a window while a
   simulation runs and logs a line every 10 ms, with no subscriber and with N (each
   reading its own stream of status ticks and log lines, from where the stream stood
   when it connected), side by side; and in each, how long the state change itself
   takes (PUT -> the server's change, by its clock).
"""
from __future__ import annotations

import argparse
import json
import selectors
import socket
import threading
import time
from typing import Any
from urllib.parse import quote

import psutil
import requests

from benchmarks.common import percentile, running_backend, summary
from tests.support import Backend, loop_experiment

CHATTY = '''
import time
try:
    while True:
        sim.run_loop(1)
        if sim.steps % 10 == 0:
            print("t =", sim.time)
        time.sleep(0.001)
except SimulationTimeout:
    pass
'''


class Listener(threading.Thread):
    """One SSE client reading a simulation's events, stamping each on arrival."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.headers = headers
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.cond = threading.Condition()
        self.response: requests.Response | None = None

    def run(self) -> None:
        self.response = requests.get(self.url, params={"logs": "false", "status": "false"},
                                     headers=self.headers, stream=True, timeout=60)
        kind = None
        try:
            for raw in self.response.iter_lines(chunk_size=None):
                line = raw.decode()
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    with self.cond:
                        self.events.append((time.time(), kind, json.loads(line[6:])))
                        self.cond.notify_all()
        except (requests.RequestException, AttributeError, ValueError):
            return  # closed by the benchmark at the end

    def wait_for(self, kind: str, state: str, after: int) -> tuple[float, dict[str, Any], int]:
        deadline = time.monotonic() + 10
        with self.cond:
            while True:
                for i in range(after, len(self.events)):
                    at, k, data = self.events[i]
                    if k == kind and data.get("state") == state:
                        return at, data, i + 1
                if not self.cond.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"no {kind} {state}")


class Crowd:
    """``n`` raw subscribers read by one selector thread (the benchmark's own cost stays
    small and out of the backend's process)."""

    def __init__(self, backend: Backend, path: str, n: int) -> None:
        host, port = backend.url.removeprefix("http://").split(":")
        self.selector = selectors.DefaultSelector()
        self.bytes = 0
        self.answered: set[int] = set()  # sockets that have received something
        self.dropped = 0                   # streams the backend dropped (they end)
        self.logs = 0                      # log events received, all streams together
        self.socks = []
        auth = "".join(f"{k}: {v}\r\n" for k, v in backend.auth_headers().items())
        for _ in range(n):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode())
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.socks.append(sock)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(0.2):
                try:
                    data = key.fileobj.recv(1 << 16)
                except BlockingIOError:
                    continue
                self.bytes += len(data)
                self.answered.add(key.fd)
                # A chunk boundary may cut one in two: counts, not proofs.
                self.dropped += data.count(b"event: dropped")
                self.logs += data.count(b"event: log")

    def wait_answered(self, timeout: float = 30.0) -> None:
        """Until every stream has begun (its response headers came)."""
        deadline = time.monotonic() + timeout
        while len(self.answered) < len(self.socks):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.socks) - len(self.answered)} streams "
                                   "never answered")
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        for sock in self.socks:
            sock.close()


def the_end(backend: Backend, sim_id: str) -> str:
    """A ``last_event_id`` at the end of the simulation's stream as it stands (its last
    event, the sizes of its logs): a stream opened there tails, it replays nothing."""
    event = backend.get("/v1/simulations", params={"limit": 1}).json()["last_event_id"]
    logs = backend.get(f"/v1/simulations/{sim_id}/logs").json()["logs"]
    return ";".join([event, *(f"{quote(f['name'], safe='')}={f['size']}" for f in logs)])


def log_bytes(backend: Backend, sim_id: str) -> int:
    """Bytes in the simulation's logs now."""
    logs = backend.get(f"/v1/simulations/{sim_id}/logs").json()["logs"]
    return sum(f["size"] for f in logs)


def latencies(backend: Backend, sim_id: str, listener: Listener,
              rounds: int) -> tuple[list[float], list[float], list[float]]:
    """(server change -> SSE server_state, PUT -> SSE state, PUT -> the server's change
    by its own clock: how long the pause itself took)."""
    server, put, whole = [], [], []
    seen = len(listener.events)
    for i in range(rounds):
        target = "paused" if i % 2 == 0 else "started"
        began = time.time()
        assert backend.set_state(sim_id, target).status_code == 200
        at, _, seen_state = listener.wait_for("state", target, seen)
        put.append(at - began)
        at, data, seen = listener.wait_for("server_state", target, seen)
        server.append(at - data["at"])
        whole.append(data["at"] - began)
        seen = max(seen, seen_state)
    return server, put, whole


def cost(proc: psutil.Process, window: float) -> tuple[float, int, int]:
    """(CPU % of one core, RSS bytes, threads) of the backend over ``window`` s."""
    before = proc.cpu_times()
    time.sleep(window)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / window, proc.memory_info().rss, proc.num_threads()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    with running_backend() as backend:
        proc = psutil.Process(backend.proc.pid)
        backend.upload("chatty", loop_experiment(sim_time=1e9, script=CHATTY))
        sim_id = backend.create("chatty", state="started")["id"]
        backend.wait_server_state(sim_id, "started")
        path = f"/v1/simulations/{sim_id}/events"
        listener = Listener(backend.url + path, backend.auth_headers())
        listener.start()
        listener.wait_for("state", "started", 0)

        print(f"backend pid {proc.pid}; simulation {sim_id} logs a line every ~10 ms")
        idle = cost(proc, args.window)
        alone = latencies(backend, sim_id, listener, args.rounds)
        # Dashboards: status ticks and state changes only. Each crowd tails from the
        # stream's end: replaying a run's history to N new streams at once is a burst of
        # its own, which would land in the window or not by the machine's pace.
        watchers = Crowd(backend, path + "?logs=false&last_event_id="
                         + quote(the_end(backend, sim_id)), args.subscribers)
        watchers.wait_answered()
        watching = cost(proc, args.window)
        watched = latencies(backend, sim_id, listener, args.rounds)
        watchers.close()
        # Everyone tailing the logs of a chatty run: the worst case.
        crowd = Crowd(backend, path + "?last_event_id=" + quote(the_end(backend, sim_id)),
                      args.subscribers)
        crowd.wait_answered()
        received, written, events = crowd.bytes, log_bytes(backend, sim_id), crowd.logs
        busy = cost(proc, args.window)
        received, written = crowd.bytes - received, log_bytes(backend, sim_id) - written
        events = (crowd.logs - events) / args.subscribers / args.window
        crowded = latencies(backend, sim_id, listener, args.rounds)
        crowd.close()

        n = args.subscribers
        cases = (("1 subscriber", alone, idle), (f"+{n} without logs", watched, watching),
                 (f"+{n} tailing logs", crowded, busy))
        print()
        for label, (what, target) in enumerate((("server change -> SSE", 20),
                                                ("PUT -> SSE state", None),
                                                ("PUT -> server changed", 50))):
            for name, measured, _ in cases:
                print(summary(f"{what}, {name}", measured[label], target))
        print()
        print(f"{'backend cost over ' + format(args.window, 'g') + ' s':<34} "
              f"{'CPU % of a core':>16} {'RSS MiB':>9} {'threads':>8}")
        for name, _, (cpu, rss, threads) in cases:
            print(f"{name:<34} {cpu:16.1f} {rss / 2**20:9.1f} {threads:8d}")
        for name, _, (cpu, rss, _) in cases[1:]:
            print(f"{'per subscriber, ' + name[len(str(n)) + 2:]:<34} "
                  f"{(cpu - idle[0]) / n:16.3f} {(rss - idle[1]) / n / 1024:8.1f}K")
        print(f"the {args.subscribers} subscribers read {received / 2**20:.1f} MiB "
              f"({received / args.window / 1024:.0f} KiB/s) while the run logged "
              f"{written / args.window / 1024:.1f} KiB/s, {events:.1f} log events a second "
              f"each; {crowd.dropped} of them dropped")
        ratio = percentile(crowded[0], 99) / max(percentile(alone[0], 99), 1e-9)
        print(f"p99 server change -> SSE, crowded / alone: {ratio:.2f}")
        listener.response.close()
        backend.set_state(sim_id, "stopped")


if __name__ == "__main__":
    main()
