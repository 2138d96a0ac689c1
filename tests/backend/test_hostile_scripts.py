"""What a careless or hostile script leaves in its run dir cannot reach beyond it:
FIFOs, links to anywhere, trees nested thousands deep, its server's own files
(``status.json``, ``server.json``) rewritten."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import requests

from tests.support import Backend, alive, loop_experiment, wait_until

# The script runs with experiment/ as its cwd: the data dir is two levels above the run dir.
HOSTILE = '''
import os, pathlib
results, logs = sim.results_dir, pathlib.Path("../logs").resolve()
data_dir = pathlib.Path.cwd().parent.parent.parent
os.mkfifo(results / "f")
(results / "ok.txt").write_text("fine")
for name, target in {"leak": "/etc/passwd", "zero": "/dev/zero", "linked": "/etc",
                     "registry": str(data_dir / "simbackend.sqlite3")}.items():
    os.symlink(target, results / name)
os.symlink("/etc/passwd", logs / "x.log")
print("planted", flush=True)
try:
    while True:
        sim.run_loop(1)
except SimulationTimeout:
    pass
'''
PLANTED = ("f", "leak", "zero", "linked", "registry", "linked/passwd")


def health_ms(backend: Backend) -> float:
    began = time.monotonic()
    assert requests.get(f"{backend.url}/health", timeout=5).status_code == 200
    return (time.monotonic() - began) * 1000


def test_fifos_and_links_in_a_live_run_are_neither_listed_nor_served(backend: Backend) -> None:
    backend.upload("hostile", loop_experiment(sim_time=1e9, script=HOSTILE))
    sim_id = backend.create("hostile", state="started", params={"step_sleep": 0.001})["id"]
    api = f"/v1/simulations/{sim_id}"
    wait_until(lambda: "planted" in backend.get(f"{api}/logs/stdout.log").text, 20, "the plants")
    assert [f["name"] for f in backend.get(f"{api}/results").json()["results"]] == ["ok.txt"]
    assert "x.log" not in {f["name"] for f in backend.get(f"{api}/logs").json()["logs"]}

    # 40 readers of the FIFO at once (more than the server's threads) must not wedge it.
    answers: list[int] = []
    readers = [threading.Thread(target=lambda: answers.append(requests.get(
        f"{backend.url}{api}/results/f", headers=backend.auth_headers(),
        timeout=10).status_code)) for _ in range(40)]
    for reader in readers:
        reader.start()
    # Answered while 40 requests are in flight, not after a wedged thread's timeout
    # (10 s): on a loaded 2-core machine the answer can take a few hundred ms.
    assert health_ms(backend) < 2000
    for reader in readers:
        reader.join(15)
    assert answers == [404] * 40
    for name in PLANTED:
        response = backend.get(f"{api}/results/{name}")
        assert response.status_code == 404, (name, response.text[:200])
        assert response.json()["error"]["code"] == "not_found"
    assert backend.get(f"{api}/logs/x.log").status_code == 404
    assert backend.get(f"{api}/results/ok.txt").text == "fine"

    # The upload skips them, says so in the record, and they are not served after it.
    assert backend.set_state(sim_id, "stopped").status_code == 200
    record = backend.wait_uploaded(sim_id)
    skipped = {s["path"]: s["reason"] for s in record["upload"]["skipped"]}
    assert skipped == {"logs/x.log": "a symbolic link", "results/f": "a FIFO",
                       "results/leak": "a symbolic link", "results/linked": "a symbolic link",
                       "results/registry": "a symbolic link", "results/zero": "a symbolic link"}
    assert [f["name"] for f in backend.get(f"{api}/results").json()["results"]] == ["ok.txt"]
    for name in PLANTED:
        assert backend.get(f"{api}/results/{name}").status_code == 404


DEEP = '''
import os
folder = sim.results_dir
(folder / "top.txt").write_text("top")
for i in range(1500):
    folder = folder / "d"
    os.mkdir(folder)
(folder / "bottom.txt").write_text("bottom")
sim.run_loop(1)
'''


def test_a_tree_nested_1500_deep_uploads_what_fits_and_deletes_whole(backend: Backend) -> None:
    backend.upload("deep", loop_experiment(sim_time=10.0, script=DEEP))
    sim_id = backend.create("deep", state="started")["id"]
    api = f"/v1/simulations/{sim_id}"
    record = backend.wait_uploaded(sim_id, timeout=30)
    assert record["state"] == "completed"
    assert record["upload"]["skipped_count"] == 1
    assert "deeper than 32" in record["upload"]["skipped"][0]["reason"]
    names = [f["name"] for f in backend.get(f"{api}/results").json()["results"]]
    assert names == ["top.txt"]
    assert backend.get(f"{api}/results/top.txt").text == "top"
    backend.wait_run_dir_removed(sim_id)
    assert backend.delete(api).status_code == 204
    assert backend.get(api).status_code == 404
    assert not (backend.data_dir / "storage" / "simulations" / sim_id).exists()


def test_a_live_deep_tree_is_listed_without_failing(backend: Backend) -> None:
    script = DEEP.replace("sim.run_loop(1)", "print('deep', flush=True)\n"
                          "while True:\n    sim.run_loop(1)")
    backend.upload("deep-live", loop_experiment(sim_time=1e9, script=script))
    sim_id = backend.create("deep-live", state="started", params={"step_sleep": 0.001})["id"]
    api = f"/v1/simulations/{sim_id}"
    wait_until(lambda: "deep" in backend.get(f"{api}/logs/stdout.log").text, 20, "the tree")
    response = backend.get(f"{api}/results")
    assert response.status_code == 200
    assert [f["name"] for f in response.json()["results"]] == ["top.txt"]
    deep_name = "/".join(["d"] * 1500) + "/bottom.txt"
    assert backend.get(f"{api}/results/{deep_name}").status_code in (400, 404)
    assert backend.set_state(sim_id, "stopped").status_code == 200
    backend.wait_uploaded(sim_id, timeout=30)
    backend.wait_run_dir_removed(sim_id)  # the tree is gone: nothing is left to trip on


# Writes sim.params["text"] over its server's ../<sim.params["file"]> after one step;
# then ends the process at once ("exit"), runs on ("run on") or hangs outside run_loop
# ("hang": only the backend's watchdog can end it). It holds the server's status lock
# meanwhile (as a hostile script can): no status.json write of the server's own is
# under way, so none replaces what it wrote.
REWRITES = '''
import gc, os, pathlib, time
sim.run_loop(1)
gc.unfreeze()  # the server froze what it made (not listed by get_objects)
server = next(o for o in gc.get_objects() if type(o).__name__ == "SimulationServer")
with server._status_lock:
    pathlib.Path("..", sim.params["file"]).write_text(sim.params["text"])
    print("rewritten", flush=True)
    if sim.params["then"] == "exit":
        os._exit(0)
while sim.params["then"] == "hang":
    time.sleep(0.05)
while True:
    sim.run_loop(1)
    time.sleep(0.01)
'''


def rewriting(backend: Backend, file: str, text: str, then: str) -> str:
    sim_id = backend.create("rewrites", params={"file": file, "text": text, "then": then},
                            state="started")["id"]
    wait_until(lambda: "rewritten" in backend.get(
        f"/v1/simulations/{sim_id}/logs/stdout.log").text, 20, "the script to rewrite")
    return sim_id


def test_a_status_file_the_script_rewrote_is_read_as_input(backend: Backend) -> None:
    """Not JSON, not an object, or fields of the wrong shape: the run gets a clear error
    of its own (not a backend error), and the record only numbers where numbers go."""
    backend.upload("rewrites", loop_experiment(sim_time=1e9, script=REWRITES))
    for text, problem in (("{not json", "status.json is not JSON"),
                          ("[1, 2]", "status.json is not a JSON object"),
                          ('{"state": "exploded"}', "status.json: fields of the wrong "
                                                     "shape ignored: state")):
        sim_id = rewriting(backend, "status.json", text, "exit")
        record = backend.wait_state(sim_id, "failed")
        assert record["error"]["type"] == "crashed", record["error"]
        assert record["error"]["status_problem"] == problem
        assert record["exit_code"] == 0
    sim_id = rewriting(backend, "status.json", json.dumps(
        {"state": "completed", "sim_time": "lots", "steps": -1, "exit_code": "x",
         "usage": [1], "real_time": 0.5}), "exit")
    record = backend.wait_state(sim_id, "completed")     # the state it wrote is taken
    assert record["exit_code"] == 0 and record["error"] is None
    assert record["status"]["real_time"] == 0.5
    assert all(isinstance(record["status"].get(k, 0), (int, float))
               for k in ("sim_time", "steps")), record["status"]
    assert not isinstance(record["status"].get("usage", {}), list)
    assert "backend_error" not in backend.log() and "Traceback" not in backend.log()


def in_folder(backend: Backend, folder: Path) -> list[int]:
    """The backend's descendants working in ``folder`` (its server.json may lie)."""
    found = []
    for proc in psutil.Process(backend.proc.pid).children(recursive=True):
        try:
            if proc.cwd() == str(folder):
                found.append(proc.pid)
        except psutil.Error:
            continue  # gone meanwhile, as warm servers may be
    return found


def test_a_server_file_the_script_rewrote_does_not_stop_the_next_start(
        make_backend: Callable[..., Backend]) -> None:
    """A ``server.json`` of the wrong shape names no server: after a restart the run is
    ended as gone and its process killed; the backend starts and serves."""
    backend = make_backend().start()
    backend.upload("rewrites", loop_experiment(sim_time=1e9, script=REWRITES))
    sim_id = rewriting(backend, "server.json", json.dumps(
        {"pid": "x", "create_time": 1, "host": "h", "port": 99999, "token": "t"}), "run on")
    (server,) = in_folder(backend, backend.data_dir / "runs" / sim_id / "experiment")
    backend.kill9()
    backend.http = type(backend.http)()
    backend.start()
    assert backend.get("/health").status_code == 200
    error = backend.wait_state(sim_id, "failed")["error"]
    assert error["type"] == "crashed" and "gone" in error["message"], error
    wait_until(lambda: not alive(server), 10, "the unrecognised server to be killed")
    assert backend.create("rewrites", params={"file": "x", "text": "", "then": "exit"},
                          state="started")["state"] in ("started", "initialized")


def test_limits_the_script_rewrote_in_run_json_do_not_outlive_a_restart(
        make_backend: Callable[..., Backend]) -> None:
    """A backend adopting a run after a restart takes its limits from the registry,
    where its launch saved them: the run dir's ``run.json`` is the script's to rewrite."""
    backend = make_backend().start()
    backend.upload("rewrites", loop_experiment(sim_time=1e9, script=REWRITES))
    sim_id = backend.create("rewrites", params={
        "file": "run.json", "then": "hang",
        "text": json.dumps({"limits": {"real_time": None, "memory_mb": None}})},
        timeout={"real_time": 3}, limits={"memory_mb": 400}, state="started")["id"]
    wait_until(lambda: "rewritten" in backend.get(
        f"/v1/simulations/{sim_id}/logs/stdout.log").text, 20, "the script to rewrite")
    assert backend.record(sim_id)["effective_limits"] == {
        "real_time": 3, "memory_mb": 400, "start_timeout": 120}
    backend.kill9()
    backend.http = type(backend.http)()
    backend.start()
    record = backend.wait_state(sim_id, "failed", timeout=30)
    assert record["error"]["type"] == "real_time_limit", record["error"]
    assert record["effective_limits"]["real_time"] == 3


FIFOS = '''
import gc, os
sim.run_loop(1)
gc.unfreeze()  # the server froze what it made (not listed by get_objects)
server = next(o for o in gc.get_objects() if type(o).__name__ == "SimulationServer")
server.write_status()  # there may be none yet
with server._status_lock:  # see REWRITES
    for name in ("../status.json", "../logs/stderr.log"):
        os.remove(name)
        os.mkfifo(name)
    os._exit(3)
'''


def test_fifos_in_place_of_the_server_files_do_not_hold_up_the_end(backend: Backend) -> None:
    """Opening a FIFO for reading waits for a writer: the end is read without waiting."""
    backend.upload("fifos", loop_experiment(sim_time=1e9, script=FIFOS))
    sim_id = backend.create("fifos", state="started")["id"]
    record = backend.wait_state(sim_id, "failed")
    assert record["exit_code"] == 3
    assert record["error"]["type"] == "crashed"
    assert record["error"]["status_problem"] == "status.json is not a regular file"
    assert backend.wait_uploaded(sim_id)["logs_uploaded"] is True


LIVE_FIFO = '''
import os, time
sim.run_loop(1)
os.remove("../live.bin")  # made before the script runs
os.mkfifo("../live.bin")
print("planted", flush=True)
while True:
    sim.run_loop(1)
    time.sleep(0.01)
'''


def test_a_fifo_in_place_of_the_live_status_holds_up_no_request(backend: Backend) -> None:
    """The live status is read on request threads: it is then asked of the server."""
    backend.upload("live-fifo", loop_experiment(sim_time=1e9, script=LIVE_FIFO))
    sim_id = backend.create("live-fifo", state="started")["id"]
    wait_until(lambda: "planted" in backend.get(
        f"/v1/simulations/{sim_id}/logs/stdout.log").text, 20, "the FIFO to be planted")

    def status() -> dict:
        began = time.monotonic()
        found = backend.get(f"/v1/simulations/{sim_id}/status", timeout=5).json()
        assert time.monotonic() - began < 2, "a status read waited"
        return found

    # Read from the server once the backend is connected to it (the script may have
    # planted the FIFO before that).
    first = wait_until(lambda: (found := status())["steps"] > 0 and found, 20,
                       "a live status")
    assert first["server_state"] == "started"
    for _ in range(3):
        assert status()["steps"] >= first["steps"]
    assert backend.set_state(sim_id, "stopped").status_code == 200
    backend.wait_state(sim_id, "stopped")
