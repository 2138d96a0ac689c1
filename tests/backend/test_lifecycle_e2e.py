"""The lifecycle through the real REST API, with real simulation servers."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import Backend, loop_experiment, wait_until

SLOW = {"step_sleep": 0.001}


def test_full_flow_initialize_start_pause_resume_complete(backend: Backend) -> None:
    assert backend.upload("flow", loop_experiment(sim_time=400.0)).status_code == 201
    names = [e["name"] for e in backend.get("/v1/experiments").json()["experiments"]]
    assert names == ["flow"]

    sim = backend.create("flow", params={"step_sleep": 0.002})
    sim_id = sim["id"]
    assert sim["state"] == "created"
    assert backend.set_state(sim_id, "initialized").json() == {"state": "initialized"}
    status = backend.wait_server_state(sim_id, "initialized")
    assert status["sim_time"] == 0.0

    assert backend.set_state(sim_id, "started").json() == {"state": "started"}
    backend.wait_advancing(sim_id, beyond=20)

    assert backend.set_state(sim_id, "paused").json() == {"state": "paused"}
    backend.wait_server_state(sim_id, "paused")
    paused_at = backend.frozen_sim_time(sim_id)
    assert 0 < paused_at < 400

    assert backend.set_state(sim_id, "started").json() == {"state": "started"}
    record = backend.wait_state(sim_id, "completed", timeout=30)
    assert record["error"] is None
    record = backend.wait_uploaded(sim_id)
    assert record["exit_code"] == 0
    assert record["status"]["sim_time"] == 400.0
    # What the run used stays with it: CPU seconds and the peak memory of its server.
    usage = backend.status(sim_id)["usage"]
    assert usage == record["status"]["usage"]
    assert 0 < usage["cpu_seconds"] < 60 and 10 * 2**20 < usage["max_rss_bytes"] < 2**32
    backend.wait_run_dir_removed(sim_id)  # removed just after logs_uploaded turns true

    # Review after the run dir is gone: from storage.
    logs = {f["name"] for f in backend.get(f"/v1/simulations/{sim_id}/logs").json()["logs"]}
    assert {"simulation.log", "stdout.log", "stderr.log"} <= logs
    text = backend.get(f"/v1/simulations/{sim_id}/logs/simulation.log").text
    assert "reached the timeout at t=400.0 ms" in text
    assert "script ending 400" in backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log").text
    results = backend.get(f"/v1/simulations/{sim_id}/results").json()["results"]
    assert [r["name"] for r in results] == ["count.txt"]
    assert backend.get(f"/v1/simulations/{sim_id}/results/count.txt").text == "400"
    stored = backend.data_dir / "storage" / "simulations" / sim_id
    assert (stored / "record.json").is_file() and (stored / "logs" / "stdout.log").is_file()


SLOW_STEP_ENGINE = '''
import time
class Counter:
    def initialize(self, params):
        self.count = 0
    def step(self, t, dt):
        time.sleep(0.3)
        self.count += 1
'''


def test_paused_is_reported_once_the_step_in_flight_has_ended(backend: Backend) -> None:
    # A pause asked for in the middle of a 0.3 s step: the server says paused only
    # once that step is over, so the sim_time it reports from then on holds still.
    files = loop_experiment(sim_time=100.0)
    files["counter.py"] = SLOW_STEP_ENGINE
    backend.upload("slow-steps", files)
    sim_id = backend.create("slow-steps", state="started")["id"]
    backend.wait_advancing(sim_id, beyond=1.0)
    assert backend.set_state(sim_id, "paused").json() == {"state": "paused"}
    backend.wait_server_state(sim_id, "paused")
    paused_at = backend.frozen_sim_time(sim_id, within=0.5)
    assert backend.set_state(sim_id, "stopped").status_code == 200
    record = backend.wait_uploaded(sim_id)
    assert record["status"]["sim_time"] == paused_at
    assert backend.get(f"/v1/simulations/{sim_id}/results/count.txt").text == \
        str(round(paused_at))


def test_logs_are_live_while_running_and_ranged(backend: Backend, loop: str) -> None:
    sim_id = backend.create(loop, params=SLOW, state="started")["id"]
    log = f"/v1/simulations/{sim_id}/logs/simulation.log"
    wait_until(lambda: "params" in backend.get(log).text,
               10, "the script's first log line")
    assert (backend.data_dir / "runs" / sim_id / "logs").is_dir()
    out = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log")
    assert out.headers["Content-Type"].startswith("text/plain")
    assert out.text == "script starting\n"
    # Sized up front, not chunked: a client can tell a whole download from a cut one.
    assert out.headers["Content-Length"] == "16" and "Transfer-Encoding" not in out.headers
    part = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log",
                       params={"offset": 7, "limit": 8})
    assert part.text == "starting" and part.headers["Content-Length"] == "8"
    past = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log", params={"offset": 10 ** 6})
    assert past.text == "" and past.headers["Content-Length"] == "0"
    assert backend.get(f"/v1/simulations/{sim_id}/logs/nope.log").status_code == 404
    bad = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log", params={"offset": -1})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_argument"
    backend.set_state(sim_id, "stopped")
    backend.wait_uploaded(sim_id)
    # Same range, now from storage, sized up front too.
    part = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log",
                       params={"offset": 7, "limit": 8})
    assert part.text == "starting" and part.headers["Content-Length"] == "8"
    whole = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log")
    assert whole.content.startswith(b"script starting\n") and \
        whole.headers["Content-Length"] == str(len(whole.content))
    past = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log", params={"offset": 10 ** 6})
    assert past.text == "" and past.headers["Content-Length"] == "0"


def test_post_started_runs_at_once_and_timeout_completes(backend: Backend) -> None:
    backend.upload("short", loop_experiment(sim_time=50.0))
    sim_id = backend.create("short", state="started")["id"]
    record = backend.wait_state(sim_id, "completed")
    assert record["error"] is None
    record = backend.wait_uploaded(sim_id)
    assert record["status"]["steps"] == 50


def test_real_time_timeout_completes(backend: Backend, loop: str) -> None:
    sim_id = backend.create(loop, params=SLOW, timeout={"real_time": 0.3}, state="started")["id"]
    record = backend.wait_state(sim_id, "completed")
    assert record["error"] is None
    backend.wait_uploaded(sim_id)
    log = backend.get(f"/v1/simulations/{sim_id}/logs/simulation.log").text
    assert "real-time timeout of 0.3 s" in log


def test_stop_while_paused_is_fast(backend: Backend, loop: str) -> None:
    sim_id = backend.create(loop, params=SLOW, state="started")["id"]
    backend.wait_advancing(sim_id, beyond=5)
    backend.set_state(sim_id, "paused")
    backend.wait_server_state(sim_id, "paused")
    began = time.monotonic()
    assert backend.set_state(sim_id, "stopped").json() == {"state": "stopped"}
    wait_until(lambda: backend.record(sim_id)["exit_code"] is not None, 5, "the process to exit")
    elapsed = time.monotonic() - began
    assert elapsed < 0.5, f"stopping a paused run took {elapsed:.3f} s"
    record = backend.wait_uploaded(sim_id)
    assert record["state"] == "stopped" and record["exit_code"] == 0
    # The script's finally block ran: partial results were saved and uploaded.
    count = int(backend.get(f"/v1/simulations/{sim_id}/results/count.txt").text)
    assert count == record["status"]["steps"] > 0


def test_stop_while_started(backend: Backend, loop: str) -> None:
    sim_id = backend.create(loop, params=SLOW, state="started")["id"]
    backend.wait_advancing(sim_id, beyond=5)
    backend.set_state(sim_id, "stopped")
    record = backend.wait_uploaded(sim_id)
    assert record["state"] == "stopped"
    assert record["exit_code"] == 0 and record["error"] is None
    assert backend.set_state(sim_id, "stopped").status_code == 200  # repeat: no-op
    conflict = backend.set_state(sim_id, "started")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "invalid_transition"


def test_stop_before_initialize_and_while_initialized(backend: Backend, loop: str) -> None:
    created = backend.create(loop)["id"]
    assert backend.set_state(created, "stopped").json() == {"state": "stopped"}
    record = backend.wait_uploaded(created)
    assert record["exit_code"] is None

    ready = backend.create(loop, state="initialized")["id"]
    backend.wait_server_state(ready, "initialized")
    backend.set_state(ready, "stopped")
    record = backend.wait_uploaded(ready)
    assert record["state"] == "stopped" and record["exit_code"] == 0


def test_script_exception_fails_with_traceback(backend: Backend) -> None:
    script = "sim.run_loop(3)\nraise ValueError('bad value at step %d' % sim.steps)\n"
    backend.upload("broken", loop_experiment(script=script))
    sim_id = backend.create("broken", state="started")["id"]
    record = backend.wait_state(sim_id, "failed")
    error = record["error"]
    assert error["type"] == "script_error"
    assert error["exception"] == "ValueError"
    assert error["message"] == "ValueError: bad value at step 3"
    assert error["line"] == 2
    record = backend.wait_uploaded(sim_id)
    assert record["exit_code"] == 3
    stderr = backend.get(f"/v1/simulations/{sim_id}/logs/stderr.log").text
    assert "Traceback" in stderr and "ValueError: bad value at step 3" in stderr
    assert "simserver/" not in stderr  # the server's own frames are left out


def test_syntax_error_fails_at_initialize_with_line(backend: Backend) -> None:
    script = "x = 1\ny = (\nwhile True: sim.run_loop(1)\n"
    backend.upload("syntax", loop_experiment(script=script))
    sim_id = backend.create("syntax", state="initialized")["id"]
    record = backend.wait_state(sim_id, "failed")
    error = record["error"]
    assert error["type"] == "syntax_error"
    assert error["line"] in (2, 3)
    assert f"main.py, line {error['line']}" in error["message"]
    assert backend.wait_uploaded(sim_id)["status"]["steps"] == 0


def test_sigkill_of_simserver_fails_with_signal_and_keeps_partial_logs(backend: Backend,
                                                                       loop: str) -> None:
    sim_id = backend.create(loop, params=SLOW, state="started")["id"]
    log = f"/v1/simulations/{sim_id}/logs/simulation.log"
    wait_until(lambda: "params" in backend.get(log).text,
               10, "the script's first log line")
    import json
    import os
    import signal

    pid = json.loads((backend.data_dir / "runs" / sim_id / "server.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    began = time.monotonic()
    record = backend.wait_state(sim_id, "failed", timeout=5)
    assert time.monotonic() - began < 1.0
    assert record["error"]["type"] == "crashed"
    assert record["error"]["signal"] == "SIGKILL"
    record = backend.wait_uploaded(sim_id)
    assert record["exit_code"] == -9
    assert "params" in backend.get(f"/v1/simulations/{sim_id}/logs/simulation.log").text
    stdout = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log").text
    assert stdout.startswith("script starting")


def test_two_simulations_run_at_once_without_interfering(backend: Backend) -> None:
    backend.upload("pair", loop_experiment(sim_time=300.0))
    a = backend.create("pair", params={"scale": 1, "step_sleep": 0.001}, state="started")["id"]
    b = backend.create("pair", params={"scale": 7, "step_sleep": 0.001}, state="started")["id"]
    wait_until(lambda: all(backend.status(s)["sim_time"] > 10 for s in (a, b)), 10,
               "both to advance")
    backend.set_state(a, "paused")
    backend.wait_server_state(a, "paused")
    # b keeps going while a is paused.
    backend.wait_advancing(b, beyond=backend.status(b)["sim_time"] + 20)
    backend.set_state(a, "started")
    for sim_id, scale in ((a, 1), (b, 7)):
        backend.wait_state(sim_id, "completed", timeout=30)
        backend.wait_uploaded(sim_id)
        assert backend.get(f"/v1/simulations/{sim_id}/results/count.txt").text == str(300 * scale)


def test_records_survive_a_backend_restart(backend: Backend, loop: str) -> None:
    sim_id = backend.create(loop, id="keep-me", params={"x": 1})["id"]
    backend.stop()
    backend.http = type(backend.http)()
    backend.start()
    record = backend.record(sim_id)
    assert record["state"] == "created" and record["params"] == {"x": 1}
    assert backend.set_state(sim_id, "started").json() == {"state": "started"}
    backend.set_state(sim_id, "stopped")
    assert backend.wait_uploaded(sim_id)["state"] == "stopped"


def test_offset_past_the_largest_file_size_reads_nothing(backend: Backend, loop: str) -> None:
    sim_id = backend.create(loop, params=SLOW, state="started")["id"]
    url = f"/v1/simulations/{sim_id}/logs/stdout.log"
    wait_until(lambda: "script starting" in backend.get(url).text, 10, "stdout")
    assert backend.get(url, params={"offset": 41458872931397, "limit": 10}).text == ""
    backend.set_state(sim_id, "stopped")
    backend.wait_uploaded(sim_id)
    response = backend.get(url, params={"offset": 41458872931397, "limit": 10})
    assert response.status_code == 200 and response.text == ""


def test_status_reads_while_a_run_ends_leave_its_final_status_whole(backend: Backend) -> None:
    """Request threads only read: the final status merged at exit is never overwritten."""
    import threading

    backend.upload("short", loop_experiment(sim_time=300.0))
    sim_id = backend.create("short", params={"step_sleep": 0.001}, state="started")["id"]
    stop = threading.Event()

    def hammer() -> None:
        http = backend.as_token(backend.token)
        while not stop.is_set():
            http.get(f"{backend.url}/v1/simulations/{sim_id}/status", timeout=10)

    readers = [threading.Thread(target=hammer) for _ in range(4)]
    for reader in readers:
        reader.start()
    try:
        record = backend.wait_uploaded(sim_id, timeout=30)
    finally:
        stop.set()
        for reader in readers:
            reader.join(10)
    assert record["state"] == "completed" and record["exit_code"] == 0
    assert record["status"]["sim_time"] == 300.0 and record["status"]["steps"] == 300
    stored = backend.get(f"/v1/simulations/{sim_id}/status").json()
    assert (stored["sim_time"], stored["steps"]) == (300.0, 300)


def test_status_comes_from_the_servers_shared_memory(backend: Backend, loop: str) -> None:
    """A run's status reads are what its control API says, without asking it: they
    are answered even while the server cannot answer (stopped by SIGSTOP)."""
    import json
    import os
    import signal

    from backend.control_client import ControlClient
    from lifecycle.live import read_live_status
    from lifecycle.messages import ServerInfo

    sim_id = backend.create(loop, params=SLOW, state="started")["id"]
    backend.wait_advancing(sim_id, beyond=5)
    run_dir = backend.data_dir / "runs" / sim_id
    info = ServerInfo.from_dict(json.loads((run_dir / "server.json").read_text()))
    backend.set_state(sim_id, "paused")
    backend.wait_server_state(sim_id, "paused")
    shared, client = backend.status(sim_id), ControlClient(info)
    try:
        asked = client.status()
    finally:
        client.close()
    assert asked["state"] == shared["server_state"] == "paused"
    for key in ("sim_time", "steps", "timestep", "real_time", "timeout"):
        assert shared[key] == asked[key], key

    backend.set_state(sim_id, "started")
    backend.wait_advancing(sim_id, beyond=shared["sim_time"] + 5)
    try:
        frozen = stopped_where_whole(info.pid, lambda: read_live_status(run_dir))
        first, second = backend.status(sim_id), backend.status(sim_id)
    finally:
        os.kill(info.pid, signal.SIGCONT)
    assert first["server_state"] == second["server_state"] == "started"
    assert first["sim_time"] == second["sim_time"] == frozen["sim_time"] > shared["sim_time"]
    assert second["real_time"] > first["real_time"]  # started: it counts on
    backend.set_state(sim_id, "stopped")
    assert backend.wait_uploaded(sim_id)["state"] == "stopped"


def test_a_run_posted_started_starts_without_the_start_command(backend: Backend,
                                                                loop: str) -> None:
    """``POST`` with ``"state": "started"`` is saved while the experiment is fetched:
    the server is told to start by itself (``run.json``), a round trip sooner."""
    import json

    sim_id = backend.create(loop, params=SLOW, state="started")["id"]
    backend.wait_advancing(sim_id, beyond=1)
    run = json.loads((backend.data_dir / "runs" / sim_id / "run.json").read_text())
    assert run["start"] is True
    created = backend.create(loop, params=SLOW, state="initialized")["id"]
    backend.wait_server_state(created, "initialized")
    run = json.loads((backend.data_dir / "runs" / created / "run.json").read_text())
    assert run["start"] is False
    for sim in (sim_id, created):
        backend.set_state(sim, "stopped")
        assert backend.wait_uploaded(sim)["state"] == "stopped"


def stopped_where_whole(pid: int, read: Callable[[], Any], tries: int = 20) -> Any:
    """SIGSTOP ``pid`` until every thread has stopped, and return what ``read`` finds
    there; stopped halfway through a write (``read`` gives None), it goes on a little
    and is stopped again."""
    import os
    import signal

    def stopped() -> bool:
        try:
            return all(stat.read_text().rsplit(")", 1)[1].split()[0] == "T"
                       for stat in Path(f"/proc/{pid}/task").glob("*/stat"))
        except (OSError, IndexError):
            return False  # a thread ended meanwhile: look again

    for _ in range(tries):
        os.kill(pid, signal.SIGSTOP)
        wait_until(stopped, 5, f"every thread of {pid} to stop")
        found = read()
        if found is not None:
            return found
        os.kill(pid, signal.SIGCONT)
    raise AssertionError(f"pid {pid} stopped {tries} times halfway through a write")
