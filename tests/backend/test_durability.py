"""Restarts, crashes, stuck scripts and limits: nothing lost, nothing stuck."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import psutil
import requests

from tests.support import Backend, alive, loop_experiment, wait_until

SLOW = {"step_sleep": 0.002}


def server_pid(backend: Backend, sim_id: str) -> int:
    path = backend.data_dir / "runs" / sim_id / "server.json"
    return wait_until(lambda: path.exists() and json.loads(path.read_text())["pid"], 10,
                      "server.json")


def restart(backend: Backend) -> None:
    backend.http = requests.Session()
    backend.start()


def test_kill9_backend_then_restart_readopts_and_reconciles(backend: Backend, loop: str) -> None:
    backend.upload("short", loop_experiment(sim_time=400.0))
    running = [backend.create(loop, params=SLOW, state="started")["id"] for _ in range(3)]
    paused = running[2]
    for sim_id in running:
        backend.wait_advancing(sim_id)
    backend.set_state(paused, "paused")
    backend.wait_server_state(paused, "paused")
    # Held after its first step until the backend is gone, then let go to its end.
    ending = backend.create("short", params={**SLOW, "gate": "go"}, state="started")["id"]
    backend.wait_advancing(ending)
    pids = {s: server_pid(backend, s) for s in running + [ending]}

    backend.kill9()
    # The simulations outlive the backend; one ends while it is down.
    assert all(psutil.pid_exists(pid) for pid in pids.values())
    (backend.data_dir / "runs" / ending / "results" / "go").touch()
    status_file = backend.data_dir / "runs" / ending / "status.json"

    def completed() -> bool:
        # Its first status.json is written by the server's status thread, which on a
        # loaded host may come after the run's first steps (they do not wait for it).
        return status_file.exists() and json.loads(status_file.read_text())["state"] == \
            "completed"

    wait_until(completed, 20, "the fourth simulation to complete while the backend is down")
    restart(backend)

    for sim_id in running[:2]:
        assert backend.record(sim_id)["state"] == "started"
        backend.wait_advancing(sim_id)
        assert backend.status(sim_id)["server_state"] == "started"
    assert backend.record(paused)["state"] == "paused"
    record = backend.wait_uploaded(ending)
    assert record["state"] == "completed" and record["exit_code"] == 0
    log = backend.get(f"/v1/simulations/{ending}/logs/simulation.log").text
    assert "reached the timeout" in log

    # The re-adopted ones obey: pause, resume, stop.
    backend.set_state(running[0], "paused")
    backend.wait_server_state(running[0], "paused")
    backend.set_state(paused, "started")
    backend.wait_advancing(paused)
    for sim_id in running:
        backend.set_state(sim_id, "stopped")
    for sim_id in running:
        record = backend.wait_uploaded(sim_id)
        assert record["state"] == "stopped"
        assert not alive(pids[sim_id])


def test_crash_while_backend_down_is_reported_after_restart(backend: Backend, loop: str) -> None:
    sim_id = backend.create(loop, params=SLOW, state="started")["id"]
    pid = server_pid(backend, sim_id)
    backend.wait_advancing(sim_id)
    backend.kill9()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), 5, "the server to die")
    restart(backend)
    record = backend.wait_state(sim_id, "failed")
    assert record["error"]["type"] == "crashed"
    assert backend.wait_uploaded(sim_id)["logs_uploaded"]


STUBBORN = '''
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
(sim.results_dir / "child.pid").write_text(str(child.pid))
sim.run_loop(1)
print("busy looping", flush=True)
while True:
    pass
'''


def test_stuck_script_ignoring_sigterm_is_stopped_with_its_children(backend: Backend) -> None:
    backend.upload("stubborn", loop_experiment(script=STUBBORN))
    sim_id = backend.create("stubborn", state="started")["id"]
    child_file = backend.data_dir / "runs" / sim_id / "results" / "child.pid"
    child = int(wait_until(lambda: child_file.exists() and child_file.read_text(), 10, "child"))
    stdout = f"/v1/simulations/{sim_id}/logs/stdout.log"
    wait_until(lambda: "busy looping" in backend.get(stdout).text,
               10, "the busy loop")
    began = time.monotonic()
    backend.set_state(sim_id, "stopped")
    record = backend.wait_uploaded(sim_id, timeout=30)
    elapsed = time.monotonic() - began
    assert record["state"] == "stopped"
    assert record["exit_code"] == -signal.SIGKILL
    assert elapsed < 2 * 2 + 3, elapsed  # two grace periods of 2 s, then SIGKILL
    assert not alive(child)
    assert "SIGKILL" in backend.log()


HOG = '''
import numpy as np
blocks = []
while True:
    sim.run_loop(1)
    blocks.append(np.ones(8 * 2**20 // 8))   # 8 MiB a step, touched
'''


def test_memory_hog_fails_with_memory_limit(backend: Backend) -> None:
    backend.upload("hog", loop_experiment(script=HOG, sim_time=1e9))
    sim_id = backend.create("hog", limits={"memory_mb": 200}, state="started")["id"]
    record = backend.wait_state(sim_id, "failed", timeout=30)
    assert record["error"]["type"] == "memory_limit"
    assert record["error"]["rss_bytes"] > 200 * 2**20
    assert backend.wait_uploaded(sim_id)["exit_code"] is not None


STUCK_OUTSIDE_LOOP = '''
sim.run_loop(1)
while True:
    pass
'''


def test_real_time_limit_ends_a_script_that_never_calls_run_loop(backend: Backend) -> None:
    backend.upload("stuck", loop_experiment(script=STUCK_OUTSIDE_LOOP))
    sim_id = backend.create("stuck", timeout={"real_time": 0.5}, state="started")["id"]
    record = backend.wait_state(sim_id, "failed", timeout=20)
    assert record["error"]["type"] == "real_time_limit"
    assert backend.wait_uploaded(sim_id)["exit_code"] is not None


SLOW_ENGINE = '''
import time
class Counter:
    def initialize(self, params):
        time.sleep(60)
    def step(self, t, dt):
        pass
'''


def test_start_timeout_fails_and_cleans_up(backend: Backend) -> None:
    files = loop_experiment()
    files["counter.py"] = SLOW_ENGINE
    backend.upload("slowstart", files)
    sim_id = backend.create("slowstart", limits={"start_timeout": 1}, state="started")["id"]
    pid = server_pid(backend, sim_id)
    record = backend.wait_state(sim_id, "failed", timeout=20)
    assert record["error"]["type"] == "start_timeout"
    backend.wait_uploaded(sim_id)
    assert not alive(pid)


def test_orphans_are_cleaned_up_at_start(backend: Backend, loop: str) -> None:
    sim_id = backend.create(loop, params=SLOW, state="started")["id"]
    pid = server_pid(backend, sim_id)
    stray = backend.data_dir / "runs" / "no-such-record"
    (stray / "logs").mkdir(parents=True)
    backend.kill9()
    with sqlite3.connect(backend.data_dir / "simbackend.sqlite3") as db:
        db.execute("DELETE FROM simulations WHERE id = ?", (sim_id,))
    restart(backend)
    wait_until(lambda: not alive(pid), 10, "the orphan to die")
    assert not stray.exists()
    assert not (backend.data_dir / "runs" / sim_id).exists()
    assert "killing orphan" in backend.log()


def test_launch_cut_short_by_a_restart_is_launched_again(backend: Backend, loop: str) -> None:
    # The backend accepted "started" and died before any simulation server existed:
    # fake that state in the registry while the backend is down.
    template = backend.create(loop)
    backend.kill9()
    record = {**template, "id": "cut-short", "state": "started"}
    with sqlite3.connect(backend.data_dir / "simbackend.sqlite3") as db:
        db.execute("INSERT INTO simulations VALUES (?, ?, ?, ?, ?)",
                   ("cut-short", loop, "started", record["created_at"], json.dumps(record)))
    (backend.data_dir / "runs" / "cut-short" / "logs").mkdir(parents=True)  # half-made
    restart(backend)
    assert backend.record("cut-short")["state"] == "started"
    backend.wait_server_state("cut-short", "started")
    backend.wait_advancing("cut-short")
    backend.set_state("cut-short", "stopped")
    record = backend.wait_uploaded("cut-short")
    assert record["state"] == "stopped" and record["error"] is None
    assert "relaunching: sim cut-short" in backend.log()


def test_the_run_dir_of_an_uploaded_run_left_by_a_kill_goes_at_start(
        backend: Backend, loop: str) -> None:
    """Its record says uploaded, but the backend was killed before it removed the run
    dir: the next start removes it (the stored copy is what is served)."""
    sim_id = backend.create(loop, timeout={"sim_time": 10.0}, state="started")["id"]
    backend.wait_uploaded(sim_id)
    backend.wait_run_dir_removed(sim_id)
    served = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log").text
    left = backend.data_dir / "runs" / sim_id
    (left / "logs").mkdir(parents=True)
    (left / "logs" / "stdout.log").write_text("not what was uploaded")
    backend.kill9()
    restart(backend)
    assert not left.exists()
    assert backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log").text == served
