"""A script cannot leave its run: processes that escape the tree (a double fork with
``setsid``) are stopped with it and counted by the memory watchdog, in both run
boundaries; and a script does not see the backend's environment."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest

from backend.launchers.base import server_environment
from backend.launchers.boundary import open_boundary
from tests.support import Backend, alive, assert_health_fast, loop_experiment, wait_until


def _cgroup_possible(tmp: Path) -> bool:
    return open_boundary("auto", tmp / "runs").kind == "cgroup"


# The script starts a daemon the classic way (sh backgrounds `setsid python`, then
# exits): its parent is init, it is in a session of its own, it is no descendant of
# the server. It writes its pid to results/escaped.pid and, once the test has seen it
# (escaped.pid.seen), holds `hog_mb` MiB.
ESCAPING = '''
import subprocess, sys, time
DAEMON = """
import os, sys, time
path = os.path.join(sys.argv[1], "escaped.pid")
with open(path + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(path + ".tmp", path)
while not os.path.exists(path + ".seen"):
    time.sleep(0.01)
hog = b"x" * (int(sys.argv[2]) * 2**20)
while True:
    time.sleep(1)
"""
subprocess.run(["/bin/sh", "-c", 'setsid "$0" -c "$1" "$2" "$3" &', sys.executable, DAEMON,
                str(sim.results_dir), str(sim.params.get("hog_mb", 0))], check=True)
while True:
    sim.run_loop(1)
    time.sleep(0.005)
'''


@pytest.fixture(params=["cgroup", "marker", "cgroup+pool", "marker+pool"])
def boundary_backend(request: pytest.FixtureRequest, tmp_path: Path,
                     make_backend: Callable[..., Backend]) -> Backend:
    """A backend with the run boundary asked for; ``+pool``: its runs are handed to
    warm servers, which enter the boundary when handed."""
    mode, _, pool = request.param.partition("+")
    if mode == "cgroup" and not _cgroup_possible(tmp_path):
        pytest.skip("no cgroup v2 can be made and joined on this machine")
    warm = ("--pool-python", "1") if pool else ()
    backend = make_backend(args=("--run-boundary", mode, *warm)).start()
    assert backend.get("/").json()["launcher"] == {"name": "local", "boundary": mode}
    if pool:
        wait_until(lambda: backend.get("/").json()["pool"]["python"]["idle"] == 1, 30,
                   "a warm server")
    backend.upload("escape", loop_experiment(script=ESCAPING, sim_time=1e9))
    return backend


@pytest.fixture
def escaped() -> Iterator[list[int]]:
    """Pids the test saw escape; killed at teardown if the backend missed them."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_escaped(backend: Backend, sim_id: str, pids: list[int]) -> int:
    pid_file = backend.data_dir / "runs" / sim_id / "results" / "escaped.pid"
    pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 20,
                         "the daemon to start"))
    pids.append(pid)
    server = psutil.Process(json.loads(
        (backend.data_dir / "runs" / sim_id / "server.json").read_text())["pid"])
    # It did escape: once the shell that started it in the background has exited.
    wait_until(lambda: pid not in {p.pid for p in server.children(recursive=True)}, 10,
               "the daemon to leave the server's tree")
    assert os.getsid(pid) != os.getsid(server.pid)
    pid_file.with_name("escaped.pid.seen").touch()
    return pid


def test_stop_ends_a_process_that_left_the_tree(boundary_backend: Backend,
                                                escaped: list[int]) -> None:
    backend = boundary_backend
    sim_id = backend.create("escape", state="started")["id"]
    pid = _wait_escaped(backend, sim_id, escaped)
    assert_health_fast(backend)
    assert backend.set_state(sim_id, "stopped").status_code == 200
    record = backend.wait_state(sim_id, "stopped")
    assert record["error"] is None
    wait_until(lambda: not alive(pid), 10, f"escaped pid {pid} to be killed")
    backend.wait_uploaded(sim_id)
    assert_health_fast(backend)


def test_memory_watchdog_counts_a_process_that_left_the_tree(boundary_backend: Backend,
                                                             escaped: list[int]) -> None:
    backend = boundary_backend
    sim_id = backend.create("escape", params={"hog_mb": 300}, limits={"memory_mb": 200},
                            state="started")["id"]
    pid = _wait_escaped(backend, sim_id, escaped)
    assert_health_fast(backend)
    record = backend.wait_state(sim_id, "failed", timeout=20)
    assert record["error"]["type"] == "memory_limit"
    assert record["error"]["rss_bytes"] > 200 * 2**20  # the server alone is far below
    assert "over its limit of 200 MiB" in record["error"]["message"]
    wait_until(lambda: not alive(pid), 10, f"escaped pid {pid} to be killed")
    assert_health_fast(backend)


def test_a_restarted_backend_kills_what_a_run_that_ended_meanwhile_left(
        boundary_backend: Backend, escaped: list[int]) -> None:
    backend = boundary_backend
    sim_id = backend.create("escape", state="started")["id"]
    pid = _wait_escaped(backend, sim_id, escaped)
    server = next(iter(backend.simserver_pids()))
    backend.kill9()
    os.kill(server, signal.SIGKILL)  # its server dies while no backend runs
    wait_until(lambda: not alive(server), 10, "the server to die")
    assert alive(pid)
    backend.start()
    wait_until(lambda: not alive(pid), 10, f"the leftover pid {pid} to be killed")
    record = backend.wait_state(sim_id, "failed")
    assert record["error"]["type"] == "crashed"


ENVIRONMENT = '''
import json, os
(sim.results_dir / "env.json").write_text(json.dumps(dict(os.environ)))
'''


def test_a_script_sees_only_the_allowed_environment(make_backend: Callable[..., Backend]) -> None:
    backend = make_backend(env={"AWS_SECRET_ACCESS_KEY": "do-not-leak",
                                "SIMBACKEND_SCRIPT_ENV": "LAB_*", "LAB_SETTING": "on",
                                "OTHER_SETTING": "off"}).start()
    backend.upload("env", loop_experiment(script=ENVIRONMENT))
    sim_id = backend.create("env", state="started")["id"]
    assert backend.wait_state(sim_id, "completed")["error"] is None
    response = backend.get(f"/v1/simulations/{sim_id}/results/env.json")
    assert response.status_code == 200, response.text
    env = response.json()
    assert "AWS_SECRET_ACCESS_KEY" not in env and "OTHER_SETTING" not in env
    assert not [name for name in env if name.startswith("SIMBACKEND_") and
                name != "SIMBACKEND_RUN"]
    assert "SIMSERVER_TOKEN" not in env            # the server took it out for itself
    assert env["LAB_SETTING"] == "on" and env["PATH"] == os.environ["PATH"]
    assert env["SIMBACKEND_RUN"].startswith(f"{sim_id}:")
    if not any(name.endswith("_NUM_THREADS") for name in os.environ):
        # The backend sets no thread count (nor does this test): one thread per pool.
        assert {env.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                           "MKL_NUM_THREADS")} == {"1"}
    backend.wait_uploaded(sim_id)  # wound up: its boundary is gone too


def test_thread_pools_get_one_thread_unless_the_backend_sets_a_count() -> None:
    base = {"PATH": "/usr/bin", "HOME": "/home/lab"}
    env = server_environment("t", base)
    assert (env["OMP_NUM_THREADS"], env["OPENBLAS_NUM_THREADS"], env["MKL_NUM_THREADS"]) \
        == ("1", "1", "1")
    # Any count of the operator's is theirs: none of the others is set beside it (an
    # OPENBLAS_NUM_THREADS=1 would win over their OMP_NUM_THREADS in OpenBLAS).
    env = server_environment("t", {**base, "OMP_NUM_THREADS": "4"})
    assert env["OMP_NUM_THREADS"] == "4"
    assert "OPENBLAS_NUM_THREADS" not in env and "MKL_NUM_THREADS" not in env
    env = server_environment("t", {**base, "LAB_NUM_THREADS": "2"}, extra=("LAB_*",))
    assert env["LAB_NUM_THREADS"] == "2" and "OMP_NUM_THREADS" not in env
    # A count that does not pass to the script does not count.
    env = server_environment("t", {**base, "LAB_NUM_THREADS": "2"})
    assert env["OPENBLAS_NUM_THREADS"] == "1"


def test_a_script_keeps_the_thread_count_the_backend_sets(
        make_backend: Callable[..., Backend]) -> None:
    backend = make_backend(env={"OPENBLAS_NUM_THREADS": "2"}).start()
    backend.upload("env", loop_experiment(script=ENVIRONMENT))
    sim_id = backend.create("env", state="started")["id"]
    assert backend.wait_state(sim_id, "completed")["error"] is None
    env = backend.get(f"/v1/simulations/{sim_id}/results/env.json").json()
    assert env["OPENBLAS_NUM_THREADS"] == "2" and "OMP_NUM_THREADS" not in env
    backend.wait_uploaded(sim_id)


def test_an_unknown_run_boundary_or_a_negative_cap_is_refused(tmp_path: Path) -> None:
    from backend.config import Config

    with pytest.raises(ValueError, match="SIMBACKEND_RUN_BOUNDARY='jail' is not one of auto"):
        Config(data_dir=tmp_path, run_boundary="jail")
    with pytest.raises(ValueError, match="SIMBACKEND_MAX_LOG_BYTES"):
        Config(data_dir=tmp_path, max_log_bytes=-1)


def test_the_pids_of_a_cgroup_removed_while_they_are_read_are_what_was_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's cgroup goes away when its last process does; the sweep after the server's
    exit may be walking it then (the soak saw FileNotFoundError end the exit's handling,
    and the run never uploaded its logs)."""
    from backend.launchers.boundary import _cgroup_pids

    group = tmp_path / "sim-gone"
    group.mkdir()
    (group / "cgroup.procs").write_text("12\n13\n")

    def walk_until_removed(self: Path, pattern: str) -> Iterator[Path]:
        yield group / "cgroup.procs"
        raise FileNotFoundError(2, "No such file or directory", str(group / "inner"))

    monkeypatch.setattr(Path, "glob", walk_until_removed)
    assert _cgroup_pids(group) == [12, 13]


def test_removing_a_cgroup_removed_meanwhile_is_done(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same race in the removal a stop's escalation ends with (it killed that thread)."""
    from backend.launchers.boundary import _remove

    group = tmp_path / "sim-gone"
    (group / "inner").mkdir(parents=True)

    def walk_until_removed(self: Path, pattern: str) -> Iterator[Path]:
        yield group / "inner"
        raise FileNotFoundError(2, "No such file or directory", str(group / "inner"))

    monkeypatch.setattr(Path, "glob", walk_until_removed)
    _remove(group)
    assert not group.exists()
