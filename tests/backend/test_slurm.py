"""The backend with ``--launcher slurm`` against a real single-node Slurm.

The cluster (munge, slurmctld, slurmd from Debian's packages, installed when
missing) is started once for the session by :mod:`tests.slurm_cluster`. Where Slurm
cannot be installed the tests are skipped with the reason; in CI they must run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import psutil
import pytest

from tests.slurm_cluster import SlurmCluster, SlurmUnavailable, start_cluster
from tests.support import LOOP_SCRIPT, Backend, example_files, loop_experiment, wait_until

pytestmark = pytest.mark.slow

RUN_SECONDS = 60

TOKEN_PEEK = '''
import os
print("token in the script's environment:", "SIMSERVER_TOKEN" in os.environ)
'''

STUBBORN = '''
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sim.run_loop(1)
while True:          # never back in run_loop, deaf to SIGTERM
    time.sleep(0.1)
'''

MEMORY_HOG = '''
import time
hog = []
while True:
    sim.run_loop(1)
    hog.append(bytearray(20 * 2**20))  # 20 MiB a step, touched
    time.sleep(0.05)
'''


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """One single-node Slurm for the session, stopped by PID at its end."""
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except SlurmUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Slurm is required in CI: {exc}")
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    return tmp_path / "shared"


@pytest.fixture
def slurm_backend(slurm: SlurmCluster, make_backend: Callable[..., Backend],
                  shared: Path) -> Iterator[Callable[..., Backend]]:
    """Return ``make(*args)``: a started backend with the Slurm launcher; at teardown
    every job still in Slurm is cancelled (after the backends are stopped)."""

    made: list[Backend] = []

    def make(*args: str) -> Backend:
        made.append(make_backend(env=slurm.env, args=(
            "--launcher", "slurm", "--shared-dir", str(shared), "--slurm-bind-host",
            "127.0.0.1", "--slurm-poll-interval", "0.2", *args)))
        return made[-1].start()

    yield make
    for backend in made:
        backend.cleanup()
    slurm.cancel_all()


def run_dir(shared: Path, sim_id: str) -> Path:
    return shared / "runs" / sim_id


def job_id(shared: Path, sim_id: str) -> str:
    path = run_dir(shared, sim_id) / "job.json"
    return wait_until(lambda: path.exists() and json.loads(path.read_text())["job_id"],
                      RUN_SECONDS, f"{path}")


def job_fields(slurm: SlurmCluster, job: str) -> dict[str, str]:
    out = slurm.run("scontrol", "show", "job", "--oneliner", job).stdout
    return dict(w.split("=", 1) for w in out.split() if "=" in w)


def wait_job_over(slurm: SlurmCluster, job: str) -> None:
    wait_until(lambda: job not in slurm.jobs(), RUN_SECONDS, f"slurm job {job} to end")


def test_a_python_run_completes_as_a_slurm_job_with_its_logs_uploaded(
        slurm: SlurmCluster, slurm_backend: Callable[..., Backend], shared: Path) -> None:
    backend = slurm_backend()
    assert backend.get("/ready").status_code == 200
    backend.upload("loop", loop_experiment(sim_time=50))
    sim_id = backend.create("loop", state="started", limits={"memory_mb": 300},
                            timeout={"real_time": 100})["id"]
    job = job_id(shared, sim_id)
    fields = job_fields(slurm, job)
    assert fields["JobName"] == f"simbackend-{sim_id}"
    assert fields["MinMemoryNode"] == "300M" and fields["CPUs/Task"] == "1"
    # real time 100 s + start timeout 120 s + 2 x stop grace 2 s -> 4 minutes
    assert fields["TimeLimit"] == "00:04:00"

    record = backend.wait_state(sim_id, "completed", "failed", timeout=RUN_SECONDS)
    assert record["error"] is None, record["error"]
    record = backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    assert record["exit_code"] == 0 and record["status"]["sim_time"] == 50.0
    logs = {e["name"] for e in backend.get(f"/v1/simulations/{sim_id}/logs").json()["logs"]}
    assert {"simulation.log", "stdout.log", "stderr.log"} <= logs
    assert "script ending 50" in backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log").text
    assert backend.get(f"/v1/simulations/{sim_id}/results/count.txt").text == "50"
    launcher = backend.status(sim_id)["launcher"]
    assert launcher == {"name": "slurm", "job_id": job, "state": "COMPLETED", "reason": None,
                        "node": slurm.host}
    wait_until(lambda: not run_dir(shared, sim_id).exists(), 10, "the run dir to go")
    assert not (backend.data_dir / "runs" / sim_id).exists()  # run dirs live in --shared-dir


def test_the_token_stays_off_command_lines_and_the_job_script(
        slurm: SlurmCluster, slurm_backend: Callable[..., Backend], shared: Path) -> None:
    backend = slurm_backend()
    backend.upload("loop", loop_experiment(sim_time=1e9, script=TOKEN_PEEK + LOOP_SCRIPT))
    sim_id = backend.create("loop", state="started")["id"]
    backend.wait_advancing(sim_id, timeout=RUN_SECONDS)
    job = job_id(shared, sim_id)
    server = json.loads((run_dir(shared, sim_id) / "server.json").read_text())
    token = server["token"]
    assert server["host"] == "127.0.0.1"  # --slurm-bind-host, through the node-address path
    assert oct((run_dir(shared, sim_id) / "server.json").stat().st_mode & 0o777) == "0o600"
    script = slurm.run("scontrol", "write", "batch_script", job, "-").stdout
    assert "-m simserver --run-dir" in script and token not in script
    assert token not in slurm.run("scontrol", "show", "job", job).stdout
    for proc in psutil.process_iter(["cmdline"]):
        assert token not in " ".join(proc.info["cmdline"] or [])
    assert backend.set_state(sim_id, "stopped").status_code == 200
    backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    # The server dropped it from its environment: the script cannot see it.
    stdout = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log").text
    assert "token in the script's environment: False" in stdout


def test_a_nest_run_completes_with_its_threads_as_cpus(
        slurm: SlurmCluster, slurm_backend: Callable[..., Backend], shared: Path) -> None:
    backend = slurm_backend()
    files = example_files("brunel")
    config = json.loads(files["experiment.json"])
    config["engines"]["brain"]["threads"] = 2
    files["experiment.json"] = json.dumps(config).encode()
    assert backend.upload("brunel", files).status_code == 201
    sim_id = backend.create("brunel", params={"n_neurons": 200}, timeout={"sim_time": 100.0},
                            state="started")["id"]
    assert job_fields(slurm, job_id(shared, sim_id))["CPUs/Task"] == "2"
    record = backend.wait_state(sim_id, "completed", "failed", timeout=RUN_SECONDS)
    assert record["error"] is None, record["error"]
    record = backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    assert record["status"]["sim_time"] == 100.0
    names = {r["name"] for r in backend.get(f"/v1/simulations/{sim_id}/results").json()["results"]}
    assert names == {"spikes.npz", "raster.png"}
    assert "imported: NEST" in backend.get(f"/v1/simulations/{sim_id}/logs/simulation.log").text


def test_pause_resume_and_stop_through_slurm(
        slurm: SlurmCluster, slurm_backend: Callable[..., Backend], shared: Path) -> None:
    backend = slurm_backend()
    backend.upload("loop", loop_experiment(sim_time=1e9))
    sim_id = backend.create("loop", state="started", params={"step_sleep": 0.002})["id"]
    backend.wait_advancing(sim_id, timeout=RUN_SECONDS)
    assert backend.set_state(sim_id, "paused").status_code == 200
    backend.wait_server_state(sim_id, "paused")
    frozen = backend.frozen_sim_time(sim_id)
    assert backend.set_state(sim_id, "started").status_code == 200
    backend.wait_advancing(sim_id, beyond=frozen)
    job = job_id(shared, sim_id)
    assert backend.set_state(sim_id, "stopped").status_code == 200
    record = backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    assert record["state"] == "stopped" and record["error"] is None
    wait_job_over(slurm, job)
    assert job_fields(slurm, job)["JobState"] == "COMPLETED"  # it stopped itself, gracefully


def test_a_stop_the_server_ignores_escalates_to_scancel(
        slurm: SlurmCluster, slurm_backend: Callable[..., Backend], shared: Path) -> None:
    backend = slurm_backend()  # --stop-grace 2
    backend.upload("stubborn", loop_experiment(sim_time=1e9, script=STUBBORN))
    sim_id = backend.create("stubborn", state="started")["id"]
    backend.wait_server_state(sim_id, "started", timeout=RUN_SECONDS)
    job = job_id(shared, sim_id)
    assert backend.set_state(sim_id, "stopped").status_code == 200
    record = backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    assert record["state"] == "stopped" and record["error"] is None
    assert f"killing sim {sim_id} (slurm job {job}) with scancel" in backend.log()
    wait_job_over(slurm, job)
    assert job_fields(slurm, job)["JobState"] == "CANCELLED"


def test_a_job_cancelled_from_outside_fails_with_slurms_reason(
        slurm: SlurmCluster, slurm_backend: Callable[..., Backend], shared: Path) -> None:
    backend = slurm_backend()
    backend.upload("loop", loop_experiment(sim_time=1e9))
    sim_id = backend.create("loop", state="started")["id"]
    backend.wait_advancing(sim_id, timeout=RUN_SECONDS)
    job = job_id(shared, sim_id)
    slurm.run("scancel", job)  # an admin
    record = backend.wait_state(sim_id, "completed", "stopped", "failed", timeout=RUN_SECONDS)
    assert record["state"] == "failed"
    assert record["error"]["type"] == "slurm_cancelled"
    assert f"Slurm cancelled job {job} (scancel by its owner or an admin)" in \
        record["error"]["message"]
    backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    # Slurm's SIGTERM let the script end through its finally: its results were saved.
    assert backend.get(f"/v1/simulations/{sim_id}/results/count.txt").status_code == 200


def test_a_job_over_its_memory_limit_fails(
        slurm: SlurmCluster, slurm_backend: Callable[..., Backend], shared: Path) -> None:
    backend = slurm_backend()
    backend.upload("hog", loop_experiment(sim_time=1e9, script=MEMORY_HOG))
    sim_id = backend.create("hog", state="started", limits={"memory_mb": 200})["id"]
    record = backend.wait_state(sim_id, "completed", "stopped", "failed", timeout=RUN_SECONDS)
    assert record["state"] == "failed", record
    assert record["error"]["type"] == "memory_limit"
    assert "went over its memory limit (--mem)" in record["error"]["message"]
    assert "exceeded" in record["error"]["stderr_tail"].lower()
    backend.wait_uploaded(sim_id, timeout=RUN_SECONDS)


def test_a_queued_run_shows_slurms_reason_and_its_start_timeout_waits(
        slurm: SlurmCluster, slurm_backend: Callable[..., Backend], shared: Path) -> None:
    backend = slurm_backend()
    backend.upload("loop", loop_experiment(sim_time=20))
    # A job holding (nearly) all the node's memory: the run must wait for it.
    blocker = slurm.run("sbatch", "--parsable", f"--mem={slurm.memory_mb - 100}M",
                        "--output=/dev/null", "--wrap", "sleep 300").stdout.strip()
    wait_until(lambda: job_fields(slurm, blocker)["JobState"] == "RUNNING", RUN_SECONDS,
               "the blocking job to run")
    sim_id = backend.create("loop", state="started", limits={"start_timeout": 4})["id"]
    # Slurm gives a pending job its reason once the scheduler has looked at it.
    launcher = wait_until(lambda: (s := backend.status(sim_id).get("launcher")) and
                          s["state"] == "PENDING" and s["reason"] and s, RUN_SECONDS,
                          "the job to be pending for a reason")
    assert launcher["reason"] == "Resources" and launcher["node"] is None
    # Longer than its start timeout in the queue, and still waiting, not failed.
    queued_until = time.monotonic() + 5.0
    wait_until(lambda: time.monotonic() > queued_until, 10, "five seconds in the queue")
    assert backend.status(sim_id)["launcher"]["state"] == "PENDING"
    assert backend.record(sim_id)["state"] == "started"
    slurm.run("scancel", blocker)
    record = backend.wait_state(sim_id, "completed", "failed", timeout=RUN_SECONDS)
    assert record["error"] is None, record["error"]


def test_a_restarted_backend_adopts_the_running_job(
        slurm: SlurmCluster, slurm_backend: Callable[..., Backend], shared: Path) -> None:
    backend = slurm_backend()
    backend.upload("loop", loop_experiment(sim_time=1e9))
    sim_id = backend.create("loop", state="started", params={"step_sleep": 0.002})["id"]
    backend.wait_advancing(sim_id, timeout=RUN_SECONDS)
    job = job_id(shared, sim_id)
    backend.kill9()
    again = backend.start()  # the same data dir and shared dir
    assert f"adopted: sim {sim_id} (slurm job {job})" in again.log()
    assert "cancelling orphan" not in again.log()
    before = again.wait_advancing(sim_id, timeout=RUN_SECONDS)
    again.wait_advancing(sim_id, beyond=before)
    assert again.status(sim_id)["launcher"]["job_id"] == job
    assert slurm.jobs() == [job]  # the same job: none was submitted again
    assert again.set_state(sim_id, "stopped").status_code == 200
    record = again.wait_uploaded(sim_id, timeout=RUN_SECONDS)
    assert record["state"] == "stopped" and record["error"] is None


def test_a_job_no_record_owns_is_cancelled_at_start(
        slurm: SlurmCluster, slurm_backend: Callable[..., Backend], shared: Path) -> None:
    backend = slurm_backend()
    backend.upload("loop", loop_experiment(sim_time=1e9))
    sim_id = backend.create("loop", state="started")["id"]
    backend.wait_advancing(sim_id, timeout=RUN_SECONDS)
    job = job_id(shared, sim_id)
    backend.kill9()
    other = slurm_backend()  # another registry, the same shared dir: the job is nobody's
    assert f"cancelling orphan: sim {sim_id} (slurm job {job})" in other.log()
    wait_job_over(slurm, job)
    assert not run_dir(shared, sim_id).exists()


def test_sbatch_refusing_the_job_fails_the_run_with_slurms_message(
        slurm: SlurmCluster, slurm_backend: Callable[..., Backend]) -> None:
    backend = slurm_backend("--slurm-partition", "nosuchpartition")
    backend.upload("loop", loop_experiment(sim_time=20))
    sim_id = backend.create("loop", state="started")["id"]
    record = backend.wait_state(sim_id, "failed", timeout=RUN_SECONDS)
    assert record["error"]["type"] == "backend_error"
    assert "sbatch refused the job" in record["error"]["message"]
    assert "partition" in record["error"]["message"].lower()
    assert slurm.jobs() == []


def test_an_unknown_launcher_is_refused_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backend.cli", "serve", "--launcher", "pool",
         "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "SIMBACKEND_LAUNCHER must be one of local, slurm, not 'pool'" in done.stderr
    assert not (tmp_path / "simbackend.sqlite3").exists()
