"""``python -m simserver`` as a real process: its files, its control API, how it ends.

Each test prepares a run directory by hand, as the backend would, and talks to the
server over loopback HTTP with the token it handed over in the environment.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from storage.atomic import write_json_atomic
from lifecycle.messages import (
    EXIT_FAILED,
    EXIT_OK,
    EXPERIMENT_DIR,
    LOGS_DIR,
    RUN_CONFIG_FILE,
    SERVER_FILE,
    STATUS_FILE,
    STDERR_LOG,
    STDOUT_LOG,
    TOKEN_ENV,
    read_json,
    token_digest,
)
from tests.simserver.conftest import make_run_dir
from tests.support import ROOT, loop_experiment, wait_until

pytestmark = pytest.mark.slow

# How long a process may take to come up, or to end once told to.
START_SECONDS = 10.0
EXIT_SECONDS = 5.0


class SimServer:
    """One ``python -m simserver --run-dir DIR`` process and a client of its control API."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.token = secrets.token_urlsafe(24)
        config = read_json(run_dir / RUN_CONFIG_FILE)
        write_json_atomic(run_dir / RUN_CONFIG_FILE,
                          {**config, "token_sha256": token_digest(self.token)})
        env = {**os.environ, TOKEN_ENV: self.token, "PYTHONPATH": str(ROOT)}
        logs = run_dir / LOGS_DIR
        with open(logs / STDOUT_LOG, "ab") as out, open(logs / STDERR_LOG, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "simserver", "--run-dir", str(run_dir)],
                cwd=run_dir / EXPERIMENT_DIR, env=env, stdout=out, stderr=err,
                stdin=subprocess.DEVNULL, start_new_session=True)
        self.http = requests.Session()
        self.http.trust_env = False   # loopback: never through a proxy
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        self.info: dict[str, Any] = {}

    def wait_listening(self) -> SimServer:
        def listening() -> dict | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"simserver exited {self.proc.returncode}:\n{self.stderr()}")
            info = read_json(self.run_dir / SERVER_FILE)
            return info if info and info["pid"] == self.proc.pid else None

        self.info = wait_until(listening, START_SECONDS, "server.json")
        return self

    @property
    def url(self) -> str:
        return f"http://{self.info['host']}:{self.info['port']}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url + path, timeout=10, **kwargs)

    def command(self, name: Any, **kwargs: Any) -> requests.Response:
        return self.http.post(self.url + "/command", json={"command": name}, timeout=10,
                              **kwargs)

    def status(self) -> dict[str, Any]:
        response = self.get("/status")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, check: Callable[[dict], bool], what: str) -> dict[str, Any]:
        def matching() -> dict[str, Any] | None:
            status = self.status()
            return status if check(status) else None

        return wait_until(matching, START_SECONDS, what)

    def wait_state(self, state: str) -> dict[str, Any]:
        return self.wait_status(lambda s: s["state"] == state, f"state {state}")

    def wait_exit(self, timeout: float = EXIT_SECONDS) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"simserver still running after {timeout} s:\n"
                                 f"{self.stderr()}") from None

    def final_status(self) -> dict[str, Any]:
        return read_json(self.run_dir / STATUS_FILE)

    def stderr(self) -> str:
        return (self.run_dir / LOGS_DIR / STDERR_LOG).read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the server's process group (its own session), by its PID."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.http.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., SimServer]]:
    """Start simservers on run dirs built from experiment files; kill them all afterwards."""
    servers: list[SimServer] = []

    def start(files: dict[str, str] | None = None, **run_config: Any) -> SimServer:
        files = loop_experiment(sim_time=1e9) if files is None else files
        run_dir = make_run_dir(tmp_path, files, sim_id=f"sim-{len(servers) + 1}", **run_config)
        server = SimServer(run_dir)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def server(spawn: Callable[..., SimServer]) -> SimServer:
    """A listening simserver with an endless counter loop, initialized and held at t = 0."""
    running = spawn().wait_listening()
    running.wait_state("initialized")
    return running


def frozen_sim_time(server: SimServer, seconds: float = 0.25) -> float:
    """Read sim_time for ``seconds`` and return where it stands.

    Only the first read may lag (by the one step in flight when the command came);
    after that it must never move.
    """
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or len(seen) < 5:
        seen.append(server.status()["sim_time"])
    frozen = seen[-1]
    assert seen[1:] == [frozen] * (len(seen) - 1), f"sim_time moved: {sorted(set(seen))[:5]}"
    assert 0 <= frozen - seen[0] <= 1.0       # one timestep at most
    return frozen


def advancing(server: SimServer, beyond: float = 0.0) -> dict[str, Any]:
    return server.wait_status(lambda s: s["sim_time"] > beyond, f"sim_time beyond {beyond}")


def test_server_json_is_private_and_says_how_to_reach_the_server(server: SimServer) -> None:
    path = server.run_dir / SERVER_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = json.loads(path.read_text())
    assert info["pid"] == server.proc.pid
    assert info["host"] == "127.0.0.1" and isinstance(info["port"], int)
    assert info["token"] == server.token


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer wrong"},
                                     {"Authorization": ""}, {"Authorization": "Basic x"}],
                         ids=["wrong-token", "no-token", "other-scheme"])
def test_requests_without_the_token_are_refused(server: SimServer, headers: dict) -> None:
    for response in (server.get("/status", headers=headers),
                     server.get("/nowhere", headers=headers),
                     server.command("start", headers=headers)):
        assert response.status_code == 401
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "unauthorized"
    assert server.status()["state"] == "initialized"


def test_start_pause_resume(server: SimServer) -> None:
    status = server.status()
    assert (status["state"], status["sim_time"], status["steps"]) == ("initialized", 0.0, 0)
    assert status["timestep"] == 1.0 and status["timeout"]["sim_time"] == 1e9
    assert frozen_sim_time(server) == 0.0       # initialized does not advance

    assert server.command("start").json()["state"] == "started"
    advancing(server)
    assert server.command("pause").json()["state"] == "paused"
    paused_at = frozen_sim_time(server)
    assert paused_at > 0 and server.status()["state"] == "paused"

    assert server.command("resume").json()["state"] == "started"
    advancing(server, beyond=paused_at)


def test_a_pause_right_after_start_holds_the_script_instead_of_ending_it(
        server: SimServer) -> None:
    # The soak found this: the main thread woke for "start", saw "paused" and ended.
    for _ in range(5):
        assert server.command("start" if server.status()["state"] == "initialized"
                              else "resume").json()["state"] == "started"
        assert server.command("pause").json()["state"] == "paused"
    assert server.proc.poll() is None
    assert server.command("resume").json()["state"] == "started"
    advancing(server)
    assert server.proc.poll() is None


def test_events_are_numbered_and_resume_after_a_sequence_number(server: SimServer) -> None:
    first = server.get("/events?after=0").json()["events"]
    assert [(e["seq"], e["state"]) for e in first] == [(1, "initialized")]

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: server.get("/events?after=1&wait=10").json()["events"])
        server.command("start")
        assert [(e["seq"], e["state"], e["trigger"]) for e in waiting.result(10)[:1]] == [
            (2, "started", "start")]
    # The first step since the start is told once, then nothing until the next change.
    moving = server.get("/events?after=2&wait=10").json()["events"]
    assert [(e["seq"], e["kind"]) for e in moving] == [(3, "moving")]
    assert moving[0]["sim_time"] > 0 and moving[0]["steps"] >= 1

    started = time.monotonic()
    assert server.get("/events?after=3&wait=0.3").json()["events"] == []
    assert time.monotonic() - started >= 0.25          # it did wait for news
    server.command("pause")
    assert [e["seq"] for e in server.get("/events?after=0").json()["events"]] == [1, 2, 3, 4]
    assert [e["state"] for e in server.get("/events?after=3").json()["events"]] == ["paused"]


@pytest.mark.parametrize("body, status", [({"command": "explode"}, 400), ({}, 400),
                                          ({"command": "pause"}, 409)])
def test_bad_commands(server: SimServer, body: dict, status: int) -> None:
    response = server.http.post(server.url + "/command", json=body, timeout=10)
    assert response.status_code == status
    assert set(response.json()["error"]) == {"code", "message"}
    assert server.status()["state"] == "initialized"


def test_stop_ends_the_process_within_a_second(server: SimServer) -> None:
    server.command("start")
    advancing(server)
    assert server.command("stop").json()["state"] == "stopped"
    assert server.wait_exit(timeout=1.0) == EXIT_OK
    final = server.final_status()
    assert final["state"] == "stopped" and final["error"] is None
    assert final["sim_time"] > 0


def test_sigterm_while_running_is_stopped(server: SimServer) -> None:
    server.command("start")
    advancing(server)
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.wait_exit() == EXIT_OK
    assert server.final_status()["state"] == "stopped"


def test_a_failing_script_exits_3_with_a_script_error(spawn: Callable[..., SimServer]) -> None:
    server = spawn(loop_experiment(script="sim.run_loop(3)\nraise ValueError('boom')\n"))
    server.wait_listening().wait_state("initialized")
    server.command("start")
    assert server.wait_exit() == EXIT_FAILED
    final = server.final_status()
    assert final["state"] == "failed" and final["steps"] == 3
    error = final["error"]
    assert (error["type"], error["exception"], error["line"]) == ("script_error", "ValueError", 2)
    assert "ValueError: boom" in server.stderr()


def test_a_run_wanted_started_starts_once_initialized(spawn: Callable[..., SimServer]) -> None:
    server = spawn(loop_experiment(sim_time=20.0), start=True)
    assert server.wait_exit() == EXIT_OK          # nobody sent a command
    final = server.final_status()
    assert (final["state"], final["steps"]) == ("completed", 20)
    log = (server.run_dir / "logs" / "simulation.log").read_text()
    assert log.index("state: initialized") < log.index("state: started (start)")


def test_a_run_wanted_started_has_it_in_status_json_while_its_script_runs(
        spawn: Callable[..., SimServer]) -> None:
    # The status thread writes it (the main thread goes on to the script): it must be
    # there while the script is still busy, not only at the end.
    script = ("import pathlib, time\n"
              "while not pathlib.Path('go').exists():\n"
              "    time.sleep(0.01)\n"
              "sim.run_loop(1)\n")
    server = spawn(loop_experiment(script=script), start=True)
    status = wait_until(lambda: (read_json(server.run_dir / STATUS_FILE) or {}).get("state")
                        == "started" and read_json(server.run_dir / STATUS_FILE), 10,
                        "status.json to say started")
    assert status["steps"] == 0 and server.proc.poll() is None  # the script still waits
    (server.run_dir / "experiment" / "go").touch()
    assert server.wait_exit() == EXIT_OK
    assert (server.final_status()["state"], server.final_status()["steps"]) == ("completed", 1)


def test_a_syntax_error_fails_before_any_start(spawn: Callable[..., SimServer]) -> None:
    server = spawn(loop_experiment(script="sim.run_loop(1)\nwhile True\n    pass\n"))
    assert server.wait_exit() == EXIT_FAILED      # nobody sent a command
    final = server.final_status()
    assert final["state"] == "failed"
    assert (final["error"]["type"], final["error"]["line"]) == ("syntax_error", 2)


def test_a_malformed_timeout_is_an_experiment_error(spawn: Callable[..., SimServer]) -> None:
    server = spawn(loop_experiment(sim_time="100"))   # type: ignore[arg-type]
    assert server.wait_exit() == EXIT_FAILED          # at initialize, before any start
    final = server.final_status()
    assert final["state"] == "failed" and final["error"]["type"] == "experiment_error"
    assert "timeout.sim_time" in final["error"]["message"]


def test_a_model_without_step_fails_the_simulation(spawn: Callable[..., SimServer]) -> None:
    files = {**loop_experiment(), "counter.py": "class Counter:\n    pass\n"}
    server = spawn(files)
    assert server.wait_exit() == EXIT_FAILED
    final = server.final_status()
    assert (final["state"], final["exit_code"]) == ("failed", EXIT_FAILED)
    assert final["error"]["type"] == "kernel_error"


def test_a_server_of_another_launch_leaves_without_writing(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, loop_experiment())
    write_json_atomic(run_dir / RUN_CONFIG_FILE,   # relaunched meanwhile: another token
                      {**read_json(run_dir / RUN_CONFIG_FILE),
                       "token_sha256": token_digest("the new launch's token")})
    result = subprocess.run(
        [sys.executable, "-m", "simserver", "--run-dir", str(run_dir)],
        env={**os.environ, TOKEN_ENV: "the old launch's token", "PYTHONPATH": str(ROOT)},
        cwd=run_dir / EXPERIMENT_DIR, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "belongs to another launch" in result.stderr
    assert not (run_dir / SERVER_FILE).exists() and not (run_dir / STATUS_FILE).exists()
    assert not (run_dir / LOGS_DIR / "simulation.log").exists()


SLOW_SAVE_ENGINE = '''
import pathlib, time

class Slow:
    def step(self, t, dt):
        pass

    def save_results(self, results_dir):
        (results_dir / "saving").write_text("")          # the test's cue to send SIGTERM
        with open(results_dir / "big.txt", "w") as f:
            for i in range(20):
                f.write(f"chunk {i}\\n")
                f.flush()
                time.sleep(0.05)
'''


def test_sigterm_while_saving_results_waits_for_the_save(spawn: Callable[..., SimServer]) -> None:
    files = {"experiment.json": json.dumps({
        "main_script": "main.py", "engines": {"slow": {"type": "python",
                                                      "model": "slow.py:Slow"}}}),
             "slow.py": SLOW_SAVE_ENGINE, "main.py": "sim.run_loop(5)\n"}
    server = spawn(files).wait_listening()
    server.wait_state("initialized")
    server.command("start")
    results = server.run_dir / "results"
    wait_until(lambda: (results / "saving").exists(), START_SECONDS, "the save to begin")
    os.kill(server.proc.pid, signal.SIGTERM)
    assert server.wait_exit() == EXIT_OK
    assert (results / "big.txt").read_text().count("chunk") == 20, "the save was cut short"
    assert server.final_status()["state"] == "completed"
