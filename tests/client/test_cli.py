"""``simbackend <verb>`` end to end: a real backend, the CLI as a subprocess."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from client import Client
from tests.support import ROOT, Backend, loop_experiment, wait_until

pytestmark = pytest.mark.slow

SIMBACKEND = str(Path(sys.executable).parent / "simbackend")
FAILING = '''
sim.run_loop(1)
print("about to fail")
raise ValueError("the model diverged")
'''


def cli(backend: Backend, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([SIMBACKEND, *args], env=_env(backend), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _env(backend: Backend) -> dict[str, str]:
    # PYTHONFAULTHANDLER: a client that hangs can be made to print its stacks (SIGABRT).
    return {**os.environ, "SIMBACKEND_URL": backend.url, "SIMBACKEND_TOKEN": "",
            "SIMBACKEND_DATA_DIR": str(backend.data_dir), "COLUMNS": "100",
            "PYTHONFAULTHANDLER": "1"}


def spawn(backend: Backend, *args: str) -> subprocess.Popen:
    return subprocess.Popen([SIMBACKEND, *args], env=_env(backend), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=_as_from_a_terminal)


def _as_from_a_terminal() -> None:
    """Ctrl-C as a terminal delivers it: a suite started in the background (``make test
    &``; a shell without job control ignores SIGINT in background jobs) would pass its
    SIG_IGN on to the client, which then rightly ignores Ctrl-C (seen: ``SigIgn`` with
    SIGINT set, the client still reading its event stream)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stuck_at(proc: subprocess.Popen) -> str:
    """Why a client does not exit: its signal masks, then its Python stacks (it is
    aborted to print them)."""
    status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
    masks = [line for line in status if line.startswith(("State", "Sig", "ShdPnd"))]
    proc.send_signal(signal.SIGABRT)
    _, err = proc.communicate(timeout=10)
    return "\n".join(masks) + "\n" + err[-4000:]


def first_line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return line


def test_run_follow_on_an_example_completes_and_downloads(backend: Backend,
                                                          tmp_path: Path) -> None:
    done = cli(backend, "run", "examples/hello", "--param", "damping=0.3", "--timeout", "1200",
               "--follow", "--download", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert "simulation.log: " in out and "reached the timeout" in out
    assert "stdout.log: saved 1200 samples to results/trace.npz" in out
    assert " completed" in out.splitlines()[-2]
    assert (tmp_path / "out" / "trace.npz").stat().st_size > 0
    sim_id = out.split()[1]
    record = Client(backend.url, backend.token).simulation(sim_id)
    assert record["experiment"] == "hello" and record["params"] == {"damping": 0.3}


def test_exit_codes_say_failed_and_stopped(backend: Backend, tmp_path: Path) -> None:
    folder = tmp_path / "failing"
    folder.mkdir()
    for name, text in loop_experiment(script=FAILING).items():
        (folder / name).write_text(text)
    failed = cli(backend, "run", str(folder), "--follow")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "the model diverged" in failed.stderr and "Traceback" not in failed.stderr.split(
        "simulation ")[-1]

    assert backend.upload("loop", loop_experiment(sim_time=1e9)).status_code == 201
    proc = spawn(backend, "run", "loop", "--follow")
    try:
        sim_id = first_line(proc).split()[1]
        backend.wait_state(sim_id, "started")
        stopped = cli(backend, "stop", sim_id)
        assert stopped.returncode == 0 and stopped.stdout.strip() == f"{sim_id}: stopped"
        assert proc.wait(30) == 2, proc.stderr.read()
    finally:
        proc.kill()


def test_ctrl_c_leaves_the_run_going_and_says_how_to_reattach(backend: Backend) -> None:
    assert backend.upload("loop", loop_experiment(sim_time=1e9)).status_code == 201
    proc = spawn(backend, "run", "loop", "--follow")
    try:
        sim_id = first_line(proc).split()[1]
        wait_until(lambda: "script starting" in proc.stdout.readline(), 20, "the script's line")
        proc.send_signal(signal.SIGINT)
        # Both pipes drained: the log lines still streaming in must not fill stdout's
        # pipe and hold the client up on its way out.
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the client did not exit on Ctrl-C:\n{stuck_at(proc)}")
        assert proc.returncode == 130
        assert f"simbackend watch {sim_id}" in err and "Traceback" not in err
        assert backend.record(sim_id)["state"] == "started"
        before = backend.status(sim_id)["sim_time"]
        backend.wait_advancing(sim_id, before)  # it goes on
    finally:
        proc.kill()
    watch = spawn(backend, "watch", sim_id)
    try:
        wait_until(lambda: "stdout.log" in watch.stdout.readline(), 20, "watch to print logs")
        assert cli(backend, "stop", sim_id).returncode == 0
        assert watch.wait(30) == 2
    finally:
        watch.kill()


def test_the_other_verbs(backend: Backend, tmp_path: Path) -> None:
    pushed = cli(backend, "experiments", "push", "examples/hello", "--name", "hi")
    assert pushed.returncode == 0 and pushed.stdout.startswith("pushed hi"), pushed.stderr
    listed = cli(backend, "--json", "experiments")
    assert "hi" in {e["name"] for e in json.loads(listed.stdout)}
    ran = cli(backend, "run", "hi", "--timeout", "300", "--id", "r1", "--download",
              str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    rows = cli(backend, "ls").stdout.splitlines()
    assert rows[0].split() == ["ID", "EXPERIMENT", "STATE", "CREATED"]
    assert rows[1].split()[:3] == ["r1", "hi", "completed"]
    shown: dict[str, Any] = json.loads(cli(backend, "show", "r1", "--json").stdout)
    assert shown["record"]["state"] == "completed" and shown["status"]["sim_time"] == 300.0
    used = next(line for line in cli(backend, "show", "r1").stdout.splitlines()
                if line.startswith("usage"))
    assert re.fullmatch(r"usage +\d+\.\d{3} s CPU, \d+\.\d MiB peak memory", used), used
    logs = cli(backend, "logs", "r1").stdout
    assert "==> simulation.log <==" in logs and "reached the timeout" in logs
    assert "saved 300 samples" in cli(backend, "logs", "r1", "stdout.log", "-f").stdout
    assert "trace.npz" in cli(backend, "results", "r1").stdout
    got = cli(backend, "results", "get", "r1", "-o", str(tmp_path / "got"))
    assert got.returncode == 0 and (tmp_path / "got" / "trace.npz").is_file()
    events = [json.loads(line) for line in
              cli(backend, "events", "r1", "--json", "--no-logs").stdout.splitlines()]
    assert [e["data"]["state"] for e in events if e["type"] == "state"] == [
        "created", "initialized", "started", "completed"]
    assert events[-1]["type"] == "end"
    assert cli(backend, "rm", "r1").stdout.strip() == "deleted r1"
    assert cli(backend, "experiments", "rm", "hi").returncode == 0


def test_errors_are_one_line(backend: Backend) -> None:
    for args, code in ((("show", "nope"), 3), (("pause", "nope"), 3),
                       (("run", "no-such-experiment"), 3), (("run", "x", "--param", "y"), 3)):
        done = cli(backend, *args)
        assert done.returncode == code, (args, done.stderr)
        assert done.stderr.startswith("simbackend: ") and len(done.stderr.splitlines()) == 1, \
            done.stderr
    unreachable = subprocess.run([SIMBACKEND, "ls"], capture_output=True, text=True, timeout=30,
                                 env={**os.environ, "SIMBACKEND_URL": "http://127.0.0.1:9"})
    assert unreachable.returncode == 3
    assert "cannot reach the backend at http://127.0.0.1:9" in unreachable.stderr
