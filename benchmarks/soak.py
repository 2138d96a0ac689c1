"""Soak: 20 simulations under random pause/resume/stop, with a backend kill -9 mid-way.

A stopped (or completed) simulation is replaced by a new one, so 20 run all along.

    python -m benchmarks.soak [--duration 180] [--sims 20] [--seed 1] [--queued 100]
                              [--pool-python 2]

Four client threads drive five simulations each with random operations; four of the
simulations have a short sim-time timeout and may complete on their own. Half-way
through, the backend is killed with SIGKILL and restarted on the same data dir.
At the end every remaining simulation is stopped; then each must be terminal in the
state its accepted operations imply, with its logs uploaded, and no request may have
had a 5xx answer.

With ``--queued N`` the host lends exactly ``--sims`` cores and N more runs wait in the
queue all along: a run that ends frees its slot to the head of the queue, and its driver
queues a new run and takes over the oldest one the queue admitted. The queue's order
(first come: every run has priority 0) must hold across the kill -9: the backend's
``admitted:`` log lines must follow the ``queued:`` ones, and no run may be admitted twice
unless a restart cut its admission short.

With ``--pool-python N`` the backend keeps N warm python servers: launches set one aside
while they fetch, stops during a launch give it back, and the kill -9 finds some set
aside or waiting (the restart must leave none behind: checked at the end).
"""
from __future__ import annotations

import argparse
import collections
import random
import re
import shutil
import statistics
import threading
import time

import psutil
import requests

from backend.launchers.boundary import runs_key
from backend.launchers.pool import is_waiting
from benchmarks.common import percentile, running_backend, summary
from tests.support import Backend, loop_experiment, wait_until

SLOW = {"step_sleep": 0.002}


def pool_leftovers(backend: Backend) -> int:
    """Warm servers of this backend that wait for a run beyond its pool's own, once the
    pool is full again: 0 when the kill -9 and the give-backs left none behind."""
    def pool() -> dict:
        return backend.get("/").json()["pool"]["python"]

    wait_until(lambda: pool()["idle"] == pool()["size"], 60, "the pool to be full")
    key = runs_key((backend.data_dir / "runs").resolve())
    waiting = [p.pid for p in psutil.process_iter(["cmdline"])
               if "--warm" in (p.info["cmdline"] or []) and key in p.info["cmdline"]
               and is_waiting(p.pid)]
    return len(waiting) - pool()["idle"]


class Pending:
    """Runs waiting in the queue, oldest first, shared by the drivers."""

    def __init__(self, sims: list[str]) -> None:
        self.sims = collections.deque(sims)
        self.lock = threading.Lock()
        self.lengths: list[int] = []

    def add(self, sim: str) -> None:
        with self.lock:
            self.sims.append(sim)

    def claim(self, backend: Backend) -> tuple[str, str] | None:
        """The oldest pending run once the queue has let it go, with its state."""
        with self.lock:
            if not self.sims:
                return None
            try:
                state = requests.get(f"{backend.url}/v1/simulations/{self.sims[0]}",
                                     headers=backend.auth_headers(), timeout=10).json()["state"]
            except (requests.RequestException, ValueError, KeyError):
                return None
            if state == "queued":
                return None
            return self.sims.popleft(), state


class Driver:
    """Operates a set of simulations; remembers what each accepted operation implies."""

    def __init__(self, backend: Backend, sims: list[str], rng: random.Random,
                 pending: Pending | None = None) -> None:
        self.backend, self.sims, self.rng, self.pending = backend, sims, rng, pending
        self.owed = 0  # runs this driver queued and has yet to take over
        self.expected = {s: "started" for s in sims}
        #: Targets of requests whose answer the backend's kill cut off: each may or may
        #: not have been carried out.
        self.unanswered: dict[str, set[str]] = collections.defaultdict(set)
        self.created = 0
        self.latencies: list[float] = []
        self.by_target: dict[str, list[float]] = collections.defaultdict(list)
        self.server_errors: list[str] = []
        self.unreachable = 0
        self.ops = 0

    def step(self) -> None:
        live = [s for s in self.sims if self.expected[s] in ("started", "paused")]
        if len(live) < len(self.sims) or self.owed:
            self.replace(live)
            return
        sim = self.rng.choice(live)
        current = self.expected[sim]
        target = "stopped" if self.rng.random() < 0.05 else \
            ("paused" if current == "started" else "started")
        session = self.backend.as_token(self.backend.token)
        began = time.perf_counter()
        try:
            response = session.put(f"{self.backend.url}/v1/simulations/{sim}/state",
                                   json={"state": target}, timeout=10)
        except requests.RequestException:
            self.unreachable += 1  # the backend is being restarted
            self.unanswered[sim].add(target)
            return
        self.latencies.append(time.perf_counter() - began)
        self.by_target[target].append(self.latencies[-1])
        self.ops += 1
        if response.status_code >= 500:
            self.server_errors.append(f"{target} {sim}: {response.status_code} {response.text}")
        elif response.status_code == 200:
            self.expected[sim] = target
        elif response.status_code == 409:
            self.expected[sim] = "completed"  # it ended on its own before the request

    def replace(self, live: list[str]) -> None:
        """Start a new simulation in the place of one that ended. With a queue the new
        one is queued, and the driver takes over the oldest run the queue admitted."""
        if len(live) < len(self.sims) and self.post(live) == "queued":
            self.owed += 1
        if self.owed:
            claimed = self.pending.claim(self.backend)
            if claimed is not None:
                sim, state = claimed
                self.owed -= 1
                self.sims = self.sims + [sim]
                self.expected[sim] = "started" if state in ("initialized", "started") \
                    else state

    def post(self, live: list[str]) -> str | None:
        """POST a new run in the place of an ended one; its state, None if refused."""
        experiment = "short" if self.rng.random() < 0.2 else "soak"
        try:
            response = requests.post(f"{self.backend.url}/v1/simulations", timeout=10, json={
                "experiment": experiment, "params": SLOW, "state": "started"},
                headers=self.backend.auth_headers())
        except requests.RequestException:
            self.unreachable += 1
            return None
        if response.status_code >= 500:
            self.server_errors.append(f"POST: {response.status_code} {response.text}")
            return None
        if response.status_code != 201:
            return None
        sim, state = response.json()["id"], response.json()["state"]
        self.created += 1
        self.sims = live
        if state == "queued" and self.pending is not None:
            self.pending.add(sim)  # whoever takes it over will expect for it
        else:
            self.sims = live + [sim]
            self.expected[sim] = "started"
        return state

    def run(self, until: float, paused: threading.Event) -> None:
        while time.monotonic() < until:
            if paused.is_set():
                paused.wait(0.05)
            self.step()
            time.sleep(self.rng.uniform(0.0, 0.02))


def memory(backend: Backend) -> tuple[float, list[float]]:
    mib = 2 ** 20
    backend_rss = psutil.Process(backend.proc.pid).memory_info().rss / mib
    servers = []
    for pid in backend.simserver_pids():
        try:
            servers.append(psutil.Process(pid).memory_info().rss / mib)
        except psutil.Error:
            continue
    return backend_rss, servers


def queue_report(log: str, lengths: list[int]) -> int:
    """Print the queue's figures; return how often its first-come order was broken."""
    queued = re.findall(r"queued: sim (\w+)", log)
    admitted = re.findall(r"admitted: sim (\w+)", log)
    twice = [s for s, n in collections.Counter(admitted).items() if n > 1]
    rank = {s: i for i, s in enumerate(queued)}
    order = [rank[s] for s in dict.fromkeys(admitted) if s in rank]
    disorder = sum(1 for a, b in zip(order, order[1:], strict=False) if b < a)
    print(f"queue: {len(queued)} runs queued, {len(order)} admitted from it, length "
          f"min {min(lengths, default=0)} / max {max(lengths, default=0)} while driven; "
          f"out of order {disorder}; admitted twice {len(twice)} {twice[:3]}")
    return disorder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=180.0)
    parser.add_argument("--sims", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", help="copy the backend's data dir here at the end")
    parser.add_argument("--queued", type=int, default=0,
                        help="keep this many runs queued (the host lends --sims cores)")
    parser.add_argument("--pool-python", type=int, default=0,
                        help="warm python servers: every (re)start of a run is handed one "
                             "when the pool has it, set aside while its files are fetched")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    host = ("--host-threads", str(args.sims)) if args.queued else ()
    host += ("--pool-python", str(args.pool_python))
    with running_backend(*host) as backend:
        backend.upload("soak", loop_experiment(sim_time=1e12))
        backend.upload("short", loop_experiment(sim_time=4000.0))
        sims = [backend.create("short" if i % 5 == 0 else "soak", params=SLOW,
                               state="started")["id"] for i in range(args.sims)]
        wait_until(lambda: all(backend.status(s)["server_state"] == "started" for s in sims),
                   120, "every simulation to run")
        pending = Pending([backend.create("soak", params=SLOW, state="started")["id"]
                           for _ in range(args.queued)]) if args.queued else None
        if pending is not None:
            assert all(backend.record(s)["state"] == "queued" for s in pending.sims)
        mem_before = memory(backend)
        drivers = [Driver(backend, sims[i::4], random.Random(rng.random()), pending)
                   for i in range(4)]
        began = time.monotonic()
        until = began + args.duration
        hold = threading.Event()
        threads = [threading.Thread(target=d.run, args=(until, hold)) for d in drivers]
        for t in threads:
            t.start()
        queue_lengths = []
        middle = time.monotonic() + args.duration / 2
        while time.monotonic() < middle:
            time.sleep(1.0)
            if pending is not None:
                queue_lengths.append(len(backend.get("/v1/queue").json()["queue"]))
        mem_middle = memory(backend)
        hold.set()
        backend.kill9()
        restarted = time.monotonic()
        backend.start()
        restart_seconds = time.monotonic() - restarted
        hold.clear()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - began
        mem_end = memory(backend)
        if pending is not None:  # cancel what still waits: the queue first, then the rest
            for sim in list(pending.sims):
                response = backend.set_state(sim, "stopped")
                drivers[0].expected[sim] = "stopped" if response.status_code == 200 \
                    else "completed"
        for d in drivers:
            for sim, state in d.expected.items():
                if state in ("started", "paused", "queued"):
                    response = backend.set_state(sim, "stopped")
                    d.expected[sim] = "stopped" if response.status_code == 200 else "completed"
        expected = {s: st for d in drivers for s, st in d.expected.items()}
        try:
            records = {s: backend.wait_uploaded(s, timeout=120) for s in expected}
        finally:  # kept also when a run never got its logs uploaded: that is the case to read
            if args.keep:
                shutil.copytree(backend.data_dir, args.keep, dirs_exist_ok=True)
        log = backend.log()
        tracebacks = log.count("Traceback")
        leftovers = pool_leftovers(backend) if args.pool_python else 0

    unanswered = {s: t for d in drivers for s, t in d.unanswered.items()}
    # A 409 says the run had ended before the request: on its own (completed), or by a
    # stop whose answer the kill cut off. Only the latter may explain a stopped record.
    explained = {s for s in expected if records[s]["state"] != expected[s] and
                 records[s]["state"] in unanswered.get(s, ())}
    wrong = {s: (records[s]["state"], expected[s], records[s]["error"]) for s in expected
             if records[s]["state"] != expected[s] and s not in explained}
    latencies = [x for d in drivers for x in d.latencies]
    errors = [e for d in drivers for e in d.server_errors]
    ops = sum(d.ops for d in drivers)
    print(f"soak: {len(sims)} simulations at a time, {len(expected)} in all, {elapsed:.0f} s, "
          f"backend killed -9 and restarted in {restart_seconds:.2f} s mid-way")
    print(f"operations: {ops} accepted or refused ({ops / elapsed:.1f} ops/s), "
          f"{sum(d.unreachable for d in drivers)} refused while the backend was down")
    print(summary("PUT state (control) latency", latencies))
    for target in ("paused", "started", "stopped"):
        print(summary(f"  to {target}", [x for d in drivers for x in d.by_target[target]]))
    print(f"5xx answers: {len(errors)}; tracebacks in the backend log: {tracebacks}")
    if args.pool_python:
        print(f"warm pool: {log.count('handed: sim ')} runs handed a warm server, "
              f"{log.count('set aside: ')} set aside, {log.count('given back: ')} given back; "
              f"waiting servers beyond the pool at the end: {leftovers}")
    ends = {state: sum(1 for r in records.values() if r["state"] == state)
            for state in ("stopped", "completed", "failed")}
    print(f"final states: {ends}; all terminal as implied: {not wrong}; all logs uploaded: "
          f"{all(r['logs_uploaded'] for r in records.values())}")
    if explained:
        print(f"  of which {len(explained)} ended by a stop whose answer the kill cut off: "
              f"{sorted(explained)}")
    for label, (b, servers) in (("start", mem_before), ("middle", mem_middle),
                                ("end", mem_end)):
        per = f"mean {statistics.fmean(servers):.1f} MiB, max {max(servers):.1f} MiB" \
            if servers else "none running"
        print(f"memory at {label:<6}: backend {b:.1f} MiB; simservers ({len(servers)}) {per}")
    disorder = queue_report(log, queue_lengths) if pending is not None else 0
    if wrong or errors or disorder or leftovers:
        print("MISMATCHES:", wrong, errors[:5], f"queue order broken {disorder} times",
              f"{leftovers} warm servers left behind")
        raise SystemExit(1)
    print(f"p99 control latency {percentile([x * 1000 for x in latencies], 99):.1f} ms")


if __name__ == "__main__":
    main()
