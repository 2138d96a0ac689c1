"""The warm pool, end to end: warm servers handed runs through the real REST API.

A warm server's run must be indistinguishable from a cold one's; killed idle servers
are replaced; a backend killed with idle servers leaves none behind; a warm run obeys
pause, resume and stop, and is re-adopted after a kill -9 of its backend. The core
lifecycle tests run once more with the pool on (:class:`TestCoreLifecycleWarm`).
"""
from __future__ import annotations

import difflib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests

from backend.launchers.boundary import cgroup_root, runs_key
from backend.launchers.environment import thread_defaults
from backend.launchers.pool import PoolOps, is_waiting
from lifecycle.messages import WARM_READY
from tests.backend import test_lifecycle_e2e as core
from tests.backend.test_events import sse, stream
from tests.backend.test_nest_sessions import _load
from tests.support import (ROOT, Backend, alive, cpu_priority, example_files,
                           loop_experiment, wait_until)

POOL = ("--pool-nest", "1", "--pool-python", "1")
PYTHON_POOL = ("--pool-nest", "0", "--pool-python", "2")
BRUNEL_PARAMS = {"n_neurons": 200, "regime": "AI"}

#: Prints what a run's process looks like from inside; equal for warm and cold runs.
INSPECT_SCRIPT = '''
import gc, os, subprocess, sys
from pathlib import Path
here = Path.cwd()
print("cwd", here.name, here.parent.parent.name)
print("path0", sys.path[0] == str(here))
print("argv", sys.argv == [str(here / "main.py")])
print("session", os.getsid(0) == os.getpid() == os.getpgid(0))
print("nice", os.getpriority(os.PRIO_PROCESS, 0))
marker = os.environ.get("SIMBACKEND_RUN", "")
print("marker", marker.split(":")[0] == here.parent.name)
print("env", sorted(os.environ))
child = subprocess.run([sys.executable, "-c",
                        "import os; print(os.environ.get('SIMBACKEND_RUN'))"],
                       capture_output=True, text=True).stdout.strip()
print("child marker", child == marker)
# What the server made before the script lasts the run: no collection of the
# script's goes through it.
print("collections", gc.get_freeze_count() > 1000, len(gc.get_objects()) < 2000)
print("to stderr", file=sys.stderr)
try:
    while True:
        sim.run_loop(1)
except SimulationTimeout:
    file_logger.info("reached the timeout at t=%s ms", sim.time)
(sim.results_dir / "done.txt").write_text(str(sim.steps))
'''


def pool_of(backend: Backend) -> dict:
    return backend.get("/").json()["pool"]


def warm_up(backend: Backend) -> Backend:
    """Wait until every warm server of the backend's pool is ready."""
    wait_until(lambda: all(k["idle"] == k["size"] for k in pool_of(backend).values()),
               60, "the pool to be warm")
    return backend


def waiting_servers(backend: Backend) -> set[int]:
    """Pids of the warm servers of ``backend``'s pool that wait for a run."""
    key = runs_key((backend.data_dir / "runs").resolve())
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if "--warm" in argv and key in argv and is_waiting(proc.pid):
            found.add(proc.pid)
    return found


def server_pid(backend: Backend, sim_id: str) -> int:
    path = backend.data_dir / "runs" / sim_id / "server.json"
    wait_until(path.exists, 20, "server.json")
    return json.loads(path.read_text())["pid"]


def handed(backend: Backend, sim_id: str) -> bool:
    """Whether the run went to a warm server (logged once its handoff is written, which
    may be after its server.json is written and before it is in the run's boundary)."""
    return f"handed: sim {sim_id} " in backend.log()


#: Logged before "running main.py" when the start was decided before the launch wrote
#: run.json (the server starts itself), after it when the start came as a command: which
#: one is a race of the request against the launch, warm or cold alike.
STARTED = "INFO simserver.server: state: started (start)"
INITIALIZED = "INFO simserver.server: state: initialized (initialize)"


#: Said when the backend's SIGTERM (sent once a server that ended has not exited within
#: the stop grace, 2 s in the tests) comes while the raster is drawn: a matter of the
#: host's load, which a warm and a cold run may meet differently.
SLOW_TO_EXIT = "WARNING simserver.server: SIGTERM while saving the results"


def comparable(log: str) -> list[str]:
    """A log's lines without times, numbers and addresses (what differs between runs), the
    start put right after the initialization (see STARTED), and without SLOW_TO_EXIT."""
    lines = [re.sub(r"[0-9]+(\.[0-9]+)?", "#", line[24:]) for line in log.splitlines()
             if SLOW_TO_EXIT not in line]
    if STARTED in lines and INITIALIZED in lines:
        lines.remove(STARTED)
        lines.insert(lines.index(INITIALIZED) + 1, STARTED)
    return lines


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    """This module's backend: a warm pool of one server per kind."""
    server = Backend(tmp_path / "data", args=POOL).start()
    try:
        yield warm_up(server)
    finally:
        server.cleanup()


def run_to_end(backend: Backend, experiment: str, **fields) -> dict:
    sim_id = backend.create(experiment, state="started", **fields)["id"]
    backend.wait_state(sim_id, "completed", timeout=60)
    return backend.wait_uploaded(sim_id, timeout=30)


def fetched(backend: Backend, sim_id: str) -> dict[str, object]:
    """Everything a client can read of a finished run: logs and result files."""
    base = f"/v1/simulations/{sim_id}"
    logs = {f["name"]: backend.get(f"{base}/logs/{f['name']}").text
            for f in backend.get(f"{base}/logs").json()["logs"]}
    results = {f["name"]: backend.get(f"{base}/results/{f['name']}").content
               for f in backend.get(f"{base}/results").json()["results"]}
    return {"logs": logs, "results": results}


@pytest.mark.parametrize("forks", [False, True], ids=["warmed", "forked"])
def test_a_warm_run_is_indistinguishable_from_a_cold_one(
        make_backend: Callable[..., Backend], tmp_path: Path, forks: bool) -> None:
    backend = make_backend(args=POOL + (() if forks else ("--no-pool-forks",))).start()
    backend = forked_pool(backend) if forks else warm_up(backend)
    cold = make_backend().start()
    files = {**example_files("brunel")}
    python = loop_experiment(sim_time=20.0, script=INSPECT_SCRIPT)
    seen = {}
    for name, server in (("warm", backend), ("cold", cold)):
        server.upload("brunel", files)
        server.upload("inspect", python)
        runs = [run_to_end(server, "brunel", params=BRUNEL_PARAMS, timeout={"sim_time": 200}),
                run_to_end(server, "inspect")]
        assert [handed(server, r["id"]) for r in runs] == [name == "warm"] * 2
        if name == "warm":
            assert bool(handed_pids(server) & forked_pids(server)) == forks
        seen[name] = [fetched(server, r["id"]) for r in runs]
        assert all(r["exit_code"] == 0 and r["error"] is None for r in runs)
    for warm, cold_run in zip(seen["warm"], seen["cold"], strict=True):
        assert warm["logs"].keys() == cold_run["logs"].keys()
        assert warm["results"].keys() == cold_run["results"].keys()
        for name in ("stdout.log", "stderr.log"):
            assert warm["logs"][name] == cold_run["logs"][name]
        warm_log, cold_log = (comparable(r["logs"]["simulation.log"]) for r in (warm, cold_run))
        assert warm_log == cold_log, "\n".join(difflib.unified_diff(cold_log, warm_log,
                                                                   "cold", "warm", lineterm=""))
    for name in ("warm", "cold"):  # the data is saved before the end; the plot after
        log = seen[name][0]["logs"]["simulation.log"]
        order = [log.index(m) for m in ("saved: spikes.npz", "state: completed",
                                        "saved: raster.png", "exiting: completed")]
        assert order == sorted(order), log
    brunel_warm, brunel_cold = (seen[k][0]["results"] for k in ("warm", "cold"))
    assert set(brunel_warm) == {"spikes.npz", "raster.png"}
    (tmp_path / "w.npz").write_bytes(brunel_warm["spikes.npz"])
    (tmp_path / "c.npz").write_bytes(brunel_cold["spikes.npz"])
    warm_spikes, cold_spikes = np.load(tmp_path / "w.npz"), np.load(tmp_path / "c.npz")
    assert sorted(warm_spikes) == sorted(cold_spikes)
    assert len(warm_spikes["ex_spikes_times"]) > 100
    for key in warm_spikes:
        np.testing.assert_array_equal(warm_spikes[key], cold_spikes[key], err_msg=key)
    stdout = seen["warm"][1]["logs"]["stdout.log"]
    assert "session True" in stdout and "marker True" in stdout and "path0 True" in stdout
    assert "child marker True" in stdout and "argv True" in stdout
    assert "collections True True" in stdout  # and in the cold run's: the logs are equal


def test_a_nest_session_on_a_warm_server_gives_exactly_pynest_n_events(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    # The example puts its folder first on sys.path, where its client.py would shadow
    # the client package for the rest of the session.
    monkeypatch.setattr(sys, "path", list(sys.path))
    client, network = _load("client"), _load("network")
    expected = client.in_pynest(network.DEFAULT_SEED)
    sim_id, n_events = client.in_session(backend.url, backend.token, network.DEFAULT_SEED)
    assert handed(backend, sim_id)
    assert n_events == expected > 100
    assert backend.wait_uploaded(sim_id, timeout=30)["state"] == "stopped"


def test_a_warm_server_is_in_its_runs_boundary(backend: Backend) -> None:
    backend.upload("loop", loop_experiment(sim_time=1e9))
    sim_id = backend.create("loop", params=core.SLOW, state="started")["id"]
    pid = server_pid(backend, sim_id)
    wait_until(lambda: handed(backend, sim_id), 10, "the handoff to be logged")
    # A server set aside while the files were fetched may still be on its way into the
    # boundary when the handoff is logged; it runs none of the run before it is inside.
    backend.wait_advancing(sim_id, beyond=0.0)
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid
    boundary = backend.get("/").json()["launcher"]["boundary"]
    if boundary == "cgroup":
        assert Path(f"/proc/{pid}/cgroup").read_text().strip().endswith(f"/sim-{sim_id}")
    assert not is_waiting(pid)
    backend.set_state(sim_id, "stopped")
    assert backend.wait_uploaded(sim_id)["state"] == "stopped"
    assert not alive(pid)


def test_an_idle_warm_server_killed_is_replaced(backend: Backend) -> None:
    before = waiting_servers(backend)
    assert len(before) == 2
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(waiting_servers(backend) - before) == 1, 30, "a replacement")
    warm_up(backend)
    assert "while idle" in backend.log()
    backend.upload("short", loop_experiment(sim_time=20.0))
    record = run_to_end(backend, "short")
    assert handed(backend, record["id"])


def test_a_killed_backend_leaves_no_waiting_server_behind(backend: Backend) -> None:
    idle = waiting_servers(backend)
    assert len(idle) == 2
    stuck = min(idle)
    # Stopped, as the pool holds a warm-up while a run starts: it cannot read the end of
    # file its backend's death leaves; the kernel kills it (its parent-death signal).
    os.kill(stuck, signal.SIGSTOP)
    forkers = fork_servers(backend)  # warm or warming up
    backend.kill9()
    wait_until(lambda: not any(alive(pid) for pid in idle | set(forkers)), 20,
               "the idle servers, the stopped one too, and the fork servers to leave "
               "with their backend")


def test_a_starting_backend_kills_a_waiting_server_an_earlier_one_left(
        tmp_path: Path) -> None:
    """A warm server of the same runs folder still waiting, and a fork server (their
    backend gone, and their parent-death signal not set or not delivered), are swept at
    the next start."""
    backend = Backend(tmp_path / "data", args=("--pool-nest", "0", "--pool-python", "0"))
    runs = backend.data_dir / "runs"
    runs.mkdir(parents=True)
    argv = [sys.executable, "-m", "simserver", "--warm", "python", "--pool",
            runs_key(runs.resolve())]
    # Started by this test, which stays alive: only the backend's sweep can end them.
    stray = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    forker = subprocess.Popen([*argv, "--forks"], cwd=ROOT, stdin=theirs.fileno(),
                              stderr=subprocess.DEVNULL, start_new_session=True,
                              env={**os.environ, **thread_defaults(os.environ)})
    theirs.close()
    try:
        assert stray.stdout.readline() == WARM_READY
        assert is_waiting(stray.pid)
        assert ours.recv(64) == b"ready"
        backend.start()
        for proc in (stray, forker):
            wait_until(lambda proc=proc: proc.poll() is not None, 20, "a stray to be killed")
            assert proc.returncode == -signal.SIGKILL
        log = backend.log()
        assert f"killing orphan: a waiting warm server (pid {stray.pid})" in log
        assert f"killing orphan: a fork server of warm servers (pid {forker.pid})" in log
        assert pool_of(backend) == {} or {v["idle"] + v["size"]
                                           for v in pool_of(backend).values()} == {0}
    finally:
        for proc in (stray, forker):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        ours.close()
        stray.stdin.close()
        stray.stdout.close()
        backend.cleanup()


#: Writes what NumPy's and Python's global random generators draw first.
DRAW_SCRIPT = """
import random
import numpy as np
(sim.results_dir / "draws.txt").write_text(f"{np.random.randint(2**62)} {random.getrandbits(62)}")
sim.run_loop(1)
"""


def fork_servers(backend: Backend) -> list[int]:
    return [int(pid) for pid in re.findall(r"spawned: the \w+ fork server \(pid (\d+)\)",
                                           backend.log())]


def test_forked_servers_draw_random_numbers_of_their_own(tmp_path: Path) -> None:
    """A fork shares its fork server's memory: NumPy's global generator is seeded anew in
    each, as at an import in a process of its own (Python's ``random`` is by itself)."""
    backend = Backend(tmp_path / "data", args=PYTHON_POOL).start()
    try:
        forked_pool(backend)
        backend.upload("draw", loop_experiment(sim_time=10.0, script=DRAW_SCRIPT))
        runs = [run_to_end(backend, "draw") for _ in range(2)]
        for r in runs:  # each handed a forked server
            handoff = re.search(rf"handed: sim {r['id']} \(pid (\d+)", backend.log())
            assert handoff and int(handoff[1]) in forked_pids(backend)
        draws = [backend.get(f"/v1/simulations/{r['id']}/results/draws.txt").text.split()
                 for r in runs]
        assert draws[0][0] != draws[1][0], "NumPy drew the same in two forks"
        assert draws[0][1] != draws[1][1], "random drew the same in two forks"
    finally:
        backend.cleanup()


def test_a_fork_server_killed_takes_its_idle_forks_along_and_is_replaced(
        tmp_path: Path) -> None:
    """Its idle forks leave with it (their parent-death signal), the pool starts another
    after a delay and refills from it; a run it forked goes on, and ends as any run."""
    backend = Backend(tmp_path / "data", args=PYTHON_POOL).start()
    try:
        forked_pool(backend)
        backend.upload("loop", loop_experiment(sim_time=1e9))
        sim_id = backend.create("loop", params=core.SLOW, state="started")["id"]
        backend.wait_advancing(sim_id, beyond=5)
        run = server_pid(backend, sim_id)
        assert run in forked_pids(backend)
        idle = waiting_servers(backend)
        [forker] = fork_servers(backend)
        os.kill(forker, signal.SIGKILL)
        wait_until(lambda: not any(alive(pid) for pid in idle), 20, "the idle forks to leave")
        assert alive(run)
        # Refilled at once (warmed on their own: no fork server is warm), the fork server
        # comes back after its delay, and the next refill is forked from it.
        warm_up(backend)
        wait_until(lambda: len(fork_servers(backend)) == 2 and pool_of(backend)["python"][
            "forking"], 60, "another fork server")
        os.kill(min(waiting_servers(backend)), signal.SIGKILL)
        wait_until(lambda: waiting_servers(backend) & forked_pids(backend), 30,
                   "a refill forked from the new fork server")
        backend.wait_advancing(sim_id)
        backend.set_state(sim_id, "stopped")
        record = backend.wait_uploaded(sim_id)
        assert record["state"] == "stopped" and record["error"] is None
        assert "exited: the python fork server" in backend.log()
    finally:
        backend.cleanup()


def test_a_fork_server_with_threads_does_not_fork_and_the_pool_warms_servers_alone(
        tmp_path: Path) -> None:
    """Forking a process with other threads may leave their locks held in the child: a
    fork server with threads after its warm-up (here OpenBLAS's pool of two) leaves, and
    the pool starts each warm server on its own, without trying again."""
    backend = Backend(tmp_path / "data", args=PYTHON_POOL,
                      env={"OPENBLAS_NUM_THREADS": "2"}).start()
    try:
        wait_until(lambda: "cannot fork" in backend.log(), 60, "the fork server to give up")
        assert "has 2 threads after its warm-up" in (backend.data_dir / "pool.log").read_text()
        warm_up(backend)
        assert not pool_of(backend)["python"]["forking"]
        backend.upload("short", loop_experiment(sim_time=20.0))
        record = run_to_end(backend, "short")
        assert handed(backend, record["id"]) and not forked_pids(backend)
        warm_up(backend)
        assert len(fork_servers(backend)) == 1  # not started again
    finally:
        backend.cleanup()


def test_a_backend_stopped_with_sigterm_stops_in_order_and_its_runs_go_on(
        backend: Backend) -> None:
    backend.upload("loop", loop_experiment(sim_time=1e9))
    answers: list[requests.Response] = []  # a client waiting for the run's end
    client = backend.as_token(backend.token)  # its own session: this thread has one
    waiter = threading.Thread(target=lambda: answers.append(client.post(
        backend.url + "/v1/simulations?wait=60", timeout=90,
        json={"experiment": "loop", "params": core.SLOW, "state": "started"})), daemon=True)
    waiter.start()
    sim_id = wait_until(lambda: [r["id"] for r in backend.get("/v1/simulations").json()[
        "simulations"]], 10, "the run")[0]
    backend.wait_advancing(sim_id, beyond=5)
    pid = server_pid(backend, sim_id)
    wait_until(lambda: handed(backend, sim_id), 10, "the handoff to be logged")
    idle = waiting_servers(backend)
    assert idle
    response = stream(backend, f"/v1/simulations/{sim_id}/events")
    events: list[dict] = []
    reader = threading.Thread(target=lambda: events.extend(sse(response)), daemon=True)
    reader.start()
    wait_until(lambda: events, 10, "the stream's first event")
    boundary = backend.get("/").json()["launcher"]["boundary"]

    backend.proc.send_signal(signal.SIGTERM)
    assert backend.proc.wait(30) == 0
    log = backend.log()
    assert "stopping (SIGTERM)" in log and "INFO backend: stopped" in log
    # The open stream and the wait were ended, not waited for: waitress gives up on a
    # busy worker after 5 s and says so.
    assert "still running" not in log
    reader.join(10)
    waiter.join(10)
    assert not reader.is_alive() and not waiter.is_alive()
    assert answers[0].status_code == 201, answers[0].text
    assert answers[0].json()["state"] == "started"  # as it stood: the run goes on
    wait_until(lambda: not any(alive(p) for p in idle), 20, "the idle servers to leave")
    root = cgroup_root(runs_key((backend.data_dir / "runs").resolve()))
    if boundary == "cgroup":  # the pool's waiting room is gone; the run's cgroup is not
        assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [f"sim-{sim_id}"]

    assert alive(pid), "the run outlives its backend"
    backend.http = type(backend.http)()
    backend.start()
    wait_until(lambda: f"adopted: sim {sim_id} (pid {pid})" in backend.log(), 20, "adoption")
    backend.wait_advancing(sim_id)
    backend.set_state(sim_id, "stopped")
    assert backend.wait_uploaded(sim_id)["state"] == "stopped"


def test_a_server_set_aside_for_a_run_whose_fetch_fails_goes_back_to_the_pool(
        backend: Backend) -> None:
    backend.upload("doomed", loop_experiment())
    sim_id = backend.create("doomed")["id"]  # created, nothing fetched yet
    waiting = waiting_servers(backend)
    assert backend.delete("/v1/experiments/doomed").status_code == 204
    assert backend.set_state(sim_id, "started").status_code == 200
    record = backend.wait_state(sim_id, "failed", timeout=30)
    assert record["error"]["type"] == "experiment_not_found"
    log = backend.log()
    assert "set aside: a warm python server" in log and f"for sim {sim_id}" in log
    assert "given back: the warm python server" in log and f"handed: sim {sim_id}" not in log
    # The very processes that waited before: given back, not killed and replaced.
    wait_until(lambda: waiting_servers(backend) == waiting, 20, "the pool as it was")
    assert pool_of(backend)["python"]["idle"] == 1
    assert not (backend.data_dir / "runs" / sim_id / "server.json").exists()
    # ... and the next run is handed one of them.
    backend.upload("loop", loop_experiment(sim_time=20.0))
    done = run_to_end(backend, "loop")
    assert handed(backend, done["id"])


def test_the_first_run_after_a_start_launches_with_the_other_warm_ups_held(
        tmp_path: Path) -> None:
    """A run POSTed as soon as the backend answers is handed a server still warming up;
    the other warm-ups still going on are stopped while it launches, and go on once it
    has (the pool's log says which), so none is left stopped."""
    backend = Backend(tmp_path / "data", args=("--pool-nest", "2", "--pool-python", "0"))
    backend.start()
    try:
        backend.upload("brunel", example_files("brunel"))
        sim_id = backend.create("brunel", params={"n_neurons": 50}, state="started",
                                timeout={"sim_time": 1e9})["id"]
        backend.wait_advancing(sim_id, beyond=1)
        log = backend.log()
        held = {int(pid) for pid in re.findall(r"held: a warm nest server .*\(pid (\d+)\)",
                                               log)}
        wait_until(lambda: held <= {int(pid) for pid in re.findall(
            r"going on: the warm nest server \(pid (\d+)\)", backend.log())}, 10,
            "every warm-up held to go on")
        assert server_pid(backend, sim_id) not in held
        for pid in waiting_servers(backend):
            assert psutil.Process(pid).status() != psutil.STATUS_STOPPED
        backend.set_state(sim_id, "stopped")
        backend.wait_uploaded(sim_id)
    finally:
        backend.cleanup()


@pytest.mark.parametrize("forks", [False, True], ids=["warmed", "forked"])
def test_warm_ups_take_the_cpu_from_no_run(tmp_path: Path, forks: bool) -> None:
    """With no run on the host the pool's servers warm up at the backend's priority; the
    one that replaces a server handed a run starts beside that run, at idle priority
    (nice +10, SCHED_IDLE), where the backend may raise it back, unless it is forked
    from the kind's fork server: warm at once, it takes no CPU, and has the backend's
    priority; the run's own server runs at the backend's."""
    backend = Backend(tmp_path / "data", args=POOL + (() if forks else ("--no-pool-forks",)))
    backend.start()
    try:
        warm_up(backend)
        if forks:
            wait_until(lambda: pool_of(backend)["python"]["forking"], 60, "a fork server")
        ours = cpu_priority(0)  # the backend's: it inherited this process's
        boot = waiting_servers(backend)
        assert len(boot) == 2 and {cpu_priority(pid) for pid in boot} == {ours}
        backend.upload("loop", loop_experiment(sim_time=1e9))
        sim_id = backend.create("loop", params=core.SLOW, state="started")["id"]
        backend.wait_advancing(sim_id, beyond=5)
        wait_until(lambda: handed(backend, sim_id), 10, "the handoff to be logged")
        assert cpu_priority(server_pid(backend, sim_id)) == ours
        wait_until(lambda: len(waiting_servers(backend) - boot) == 1, 30, "the refill")
        refill = (waiting_servers(backend) - boot).pop()
        lowered = (min(19, ours[0] + 10), os.SCHED_IDLE) if PoolOps().may_lower() else ours
        assert cpu_priority(refill) == (ours if forks else lowered)
        if forks:  # logged once it is warm: its pages copied, a moment after the fork
            wait_until(lambda: f"forked: a warm python server (pid {refill})"
                       in backend.log(), 10, "the fork to be logged")
        else:
            assert "forked: a warm" not in backend.log()
        backend.set_state(sim_id, "stopped")
        backend.wait_uploaded(sim_id)
    finally:
        backend.cleanup()


def test_pause_resume_and_stop_a_warm_run(backend: Backend) -> None:
    backend.upload("loop", loop_experiment(sim_time=1e9))
    sim_id = backend.create("loop", params=core.SLOW, state="started")["id"]
    backend.wait_advancing(sim_id, beyond=5)
    wait_until(lambda: handed(backend, sim_id), 10, "the handoff to be logged")
    backend.set_state(sim_id, "paused")
    backend.wait_server_state(sim_id, "paused")
    paused_at = backend.frozen_sim_time(sim_id)
    backend.set_state(sim_id, "started")
    backend.wait_advancing(sim_id, beyond=paused_at)
    backend.set_state(sim_id, "stopped")
    record = backend.wait_uploaded(sim_id)
    assert record["state"] == "stopped" and record["exit_code"] == 0
    count = int(backend.get(f"/v1/simulations/{sim_id}/results/count.txt").text)
    assert count == record["status"]["steps"] > paused_at


def test_a_warm_run_is_adopted_after_a_kill9_of_its_backend(backend: Backend) -> None:
    backend.upload("loop", loop_experiment(sim_time=1e9))
    sim_id = backend.create("loop", params=core.SLOW, state="started")["id"]
    backend.wait_advancing(sim_id, beyond=5)
    pid = server_pid(backend, sim_id)
    wait_until(lambda: handed(backend, sim_id), 10, "the handoff to be logged")
    backend.kill9()
    backend.http = type(backend.http)()
    backend.start()
    assert psutil.pid_exists(pid), "the warm run outlives its backend"
    wait_until(lambda: f"adopted: sim {sim_id} (pid {pid})" in backend.log(), 20, "adoption")
    backend.wait_advancing(sim_id)
    assert backend.record(sim_id)["state"] == "started"
    backend.set_state(sim_id, "stopped")
    record = backend.wait_uploaded(sim_id)
    assert record["state"] == "stopped"
    warm_up(backend)  # the new backend's pool fills; the adopted run is not in it
    assert pid not in waiting_servers(backend)


def test_an_experiment_no_warm_kind_fits_is_spawned_cold(backend: Backend) -> None:
    config = {"main_script": "main.py", "engines": {"x": {"type": "unheard_of"}}}
    assert backend.upload("other", {"experiment.json": json.dumps(config),
                                    "main.py": ""}).status_code == 201
    sim_id = backend.create("other", state="started")["id"]
    record = backend.wait_state(sim_id, "failed")
    assert not handed(backend, sim_id)
    assert f"spawned: sim {sim_id}" in backend.log()
    assert "unheard_of" in record["error"]["message"]


def forked_pool(backend: Backend) -> Backend:
    """Wait for the fork servers of ``backend``'s pool, then have every idle server be
    one they forked (the first fill is warmed on its own: the fork servers start after)."""
    warm_up(backend)
    kinds = [k for k, v in pool_of(backend).items() if v["size"]]
    wait_until(lambda: all(pool_of(backend)[k]["forking"] for k in kinds), 60,
               "the fork servers")
    for pid in waiting_servers(backend) - forked_pids(backend):
        os.kill(pid, signal.SIGKILL)
    size = sum(v["size"] for v in pool_of(backend).values())

    def all_forked() -> bool:
        waiting = waiting_servers(backend)
        return len(waiting) == size and waiting <= forked_pids(backend)

    wait_until(all_forked, 30, "a forked server in each place")
    # Warm at once, they copy their pages while they wait, and say when that is done.
    wait_until(lambda: not any(pool_of(backend)[k]["copying"] for k in kinds), 30,
               "the forks to have copied their pages")
    return warm_up(backend)


def forked_pids(backend: Backend) -> set[int]:
    return {int(pid) for pid in re.findall(r"forked: a warm \w+ server \(pid (\d+)\)",
                                           backend.log())}


def handed_pids(backend: Backend) -> set[int]:
    return {int(pid) for pid in re.findall(r"handed: sim \S+ \(pid (\d+)", backend.log())}


class TestCoreLifecycleWarm:
    """Core lifecycle tests of test_lifecycle_e2e, with every run handed a warm server:
    one warmed on its own, or one forked from the pool's fork server."""

    @pytest.fixture(params=[False, True], ids=["warmed", "forked"])
    def backend(self, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Backend]:
        forks = request.param
        server = Backend(tmp_path / "data",
                         args=PYTHON_POOL + (() if forks else ("--no-pool-forks",))).start()
        try:
            yield forked_pool(server) if forks else warm_up(server)
            assert "handed: sim" in server.log()
            assert "spawned: sim" not in server.log(), "a run was spawned cold"
            if forks:
                assert handed_pids(server) <= forked_pids(server)
            else:
                assert not forked_pids(server)
        finally:
            server.cleanup()

    def test_full_flow(self, backend: Backend) -> None:
        core.test_full_flow_initialize_start_pause_resume_complete(backend)

    def test_post_started_and_timeout(self, backend: Backend) -> None:
        core.test_post_started_runs_at_once_and_timeout_completes(backend)

    def test_stop_while_paused_is_fast(self, backend: Backend, loop: str) -> None:
        core.test_stop_while_paused_is_fast(backend, loop)

    def test_stop_before_initialize_and_while_initialized(self, backend: Backend,
                                                          loop: str) -> None:
        core.test_stop_before_initialize_and_while_initialized(backend, loop)

    def test_script_exception(self, backend: Backend) -> None:
        core.test_script_exception_fails_with_traceback(backend)

    def test_sigkill_of_the_server(self, backend: Backend, loop: str) -> None:
        core.test_sigkill_of_simserver_fails_with_signal_and_keeps_partial_logs(backend, loop)

    def test_two_at_once(self, backend: Backend) -> None:
        core.test_two_simulations_run_at_once_without_interfering(backend)
