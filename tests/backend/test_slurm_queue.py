"""The Slurm launcher's pure parts: reading Slurm's output, its verdicts, the limits
as sbatch options, and the commands it runs (recorded, no Slurm needed)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from backend.config import Config
from backend.launchers import LaunchSpec
from backend.launchers.slurm import (
    JOB_FILE, SlurmJob, SlurmLauncher, job_environment, limit_options, nest_threads,
)
from backend.launchers.slurm_queue import (
    JobRow, SlurmCommands, SlurmError, job_dir_sim, parse_exit_code, parse_job_id,
    parse_scontrol, parse_squeue, verdict,
)
from lifecycle.messages import NODE_HOST, TOKEN_ENV

TOKEN = "s3cret-token"


class RecordedSlurm(SlurmCommands):
    """Answers like Slurm from a table of job rows, and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict | None]] = []
        self.rows: dict[str, JobRow] = {}
        self.next_id = 41

    def run(self, argv, env=None):
        self.calls.append((argv, env))
        if argv[0] == "sbatch":
            self.next_id += 1
            return subprocess.CompletedProcess(argv, 0, f"{self.next_id}\n", "")
        if argv[0] == "scontrol":
            return subprocess.CompletedProcess(argv, 0, "JobId=1 ExitCode=0:15 x=y", "")
        if argv[0] == "squeue":
            text = "\n".join("|".join((r.job_id, r.state, r.reason or "None", r.node, r.name,
                                       r.work_dir)) for r in self.rows.values())
            return subprocess.CompletedProcess(argv, 0, text, "")
        return subprocess.CompletedProcess(argv, 0, "", "")


def row(state: str, reason: str = "", node: str = "n1", job: str = "7") -> JobRow:
    return JobRow(job, state, reason, node, "simbackend-s1", "/shared/runs/s1/experiment")


def test_squeue_output_is_read_by_job_id() -> None:
    rows = parse_squeue("7|PENDING|Resources||simbackend-a|/r/runs/a/experiment\n"
                        "8|RUNNING|None|node3|simbackend-b|/r/runs/b/experiment\n"
                        "garbage line\n")
    assert rows["7"] == JobRow("7", "PENDING", "Resources", "", "simbackend-a",
                               "/r/runs/a/experiment")
    assert rows["8"].reason == "" and rows["8"].node == "node3"
    assert set(rows) == {"7", "8"}
    assert job_dir_sim(rows["7"], Path("/r/runs")) == "a"
    assert job_dir_sim(rows["7"], Path("/elsewhere/runs")) is None


@pytest.mark.parametrize("text, expected", [
    ("0:0", (0, None)), ("3:0", (3, None)), ("0:9", (None, 9)), ("", (None, None)),
    ("x:y", (None, None))])
def test_exit_codes(text, expected) -> None:
    assert parse_exit_code(text) == expected


def test_scontrol_and_sbatch_output() -> None:
    fields = parse_scontrol("JobId=5 JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15")
    assert fields["JobState"] == "TIMEOUT" and fields["ExitCode"] == "0:15"
    assert parse_job_id("123\n") == "123" and parse_job_id("124;cluster\n") == "124"
    with pytest.raises(SlurmError, match="no job id"):
        parse_job_id("sbatch: error: nope")


@pytest.mark.parametrize("state, reason, tail, error_type", [
    ("COMPLETED", "", "", None),
    ("FAILED", "NonZeroExitCode", "", None),                 # the server said why
    ("CANCELLED", "", "", "slurm_cancelled"),
    ("TIMEOUT", "TimeLimit", "", "slurm_time_limit"),
    ("OUT_OF_MEMORY", "", "", "memory_limit"),
    ("FAILED", "JobLaunchFailure",
     "slurmstepd-n1: error: Exceeded job memory limit", "memory_limit"),  # OverMemoryKill
    ("NODE_FAIL", "", "", "node_failure"),
    ("PREEMPTED", "", "", "slurm_preempted"),
    ("FAILED", "JobLaunchFailure", "", "slurm_failed"),
])
def test_verdicts(state, reason, tail, error_type) -> None:
    found = verdict(row(state, reason), tail, terminating=False)
    assert (found.error_type if found else None) == error_type


def test_a_job_the_backend_cancelled_has_no_verdict() -> None:
    assert verdict(row("CANCELLED"), "", terminating=True) is None


def test_limits_map_to_sbatch_options() -> None:
    assert limit_options({}, 1, margin=4) == ["--cpus-per-task=1"]
    assert limit_options({"memory_mb": 511.2, "real_time": 100, "start_timeout": 120}, 4,
                         margin=20) == ["--cpus-per-task=4", "--mem=512M", "--time=4"]


def test_nest_threads_are_the_cpus(tmp_path: Path) -> None:
    (tmp_path / "experiment.json").write_text(json.dumps({"engines": {
        "a": {"type": "nest", "threads": 3}, "b": {"type": "python", "threads": 8},
        "c": {"type": "nest", "threads": "many"}}}))
    assert nest_threads(tmp_path) == 3
    (tmp_path / "experiment.json").write_text("not json")
    assert nest_threads(tmp_path) == 1


def test_the_job_environment_has_the_token_and_not_the_backends_secrets(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "storage-secret")
    monkeypatch.setenv("SIMBACKEND_STORAGE", "s3://bucket")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    env = job_environment(TOKEN)
    assert env[TOKEN_ENV] == TOKEN and env["SLURM_CONF"] == "/etc/slurm/slurm.conf"
    assert "AWS_SECRET_ACCESS_KEY" not in env and "SIMBACKEND_STORAGE" not in env


def test_spawn_submits_one_job_with_the_token_only_in_its_environment(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path, launcher="slurm", slurm_partition="short",
                    slurm_account="lab", slurm_options="--qos=fast --constraint='a b'")
    commands = RecordedSlurm()
    launcher = SlurmLauncher(config, commands)
    try:
        assert launcher.bind_host == NODE_HOST
        run_dir = tmp_path / "runs" / "s1"
        (run_dir / "experiment").mkdir(parents=True)
        job = launcher.spawn(LaunchSpec("s1", run_dir, TOKEN, {"memory_mb": 100}),
                             on_exit=lambda handle, exit: None)
    finally:
        launcher.close()
    assert isinstance(job, SlurmJob) and job.job_id == "42" and job.queued()
    argv, env = commands.calls[0]
    assert argv[:2] == ["sbatch", "--parsable"] and argv[-1] == str(run_dir / "simserver.sbatch")
    assert "--mem=100M" in argv and "--no-requeue" in argv
    assert argv[-5:-1] == ["--partition=short", "--account=lab", "--qos=fast", "--constraint=a b"]
    assert TOKEN not in " ".join(argv) and env[TOKEN_ENV] == TOKEN
    script = (run_dir / "simserver.sbatch").read_text()
    assert TOKEN not in script and "-m simserver --run-dir" in script
    assert json.loads((run_dir / JOB_FILE).read_text())["job_id"] == "42"


def test_one_squeue_follows_every_job_and_reports_the_ended_ones(tmp_path: Path) -> None:
    commands = RecordedSlurm()
    launcher = SlurmLauncher(Config(data_dir=tmp_path, slurm_poll_interval=3600), commands)
    ended = []
    try:
        jobs = []
        for i in range(3):
            (tmp_path / f"s{i}" / "logs").mkdir(parents=True)
            jobs.append(launcher.spawn(LaunchSpec(f"s{i}", tmp_path / f"s{i}", TOKEN, {}),
                                       on_exit=lambda handle, exit: ended.append((handle, exit))))
        commands.rows = {"42": row("RUNNING", job="42"), "43": row("CANCELLED", job="43")}
        commands.calls.clear()
        launcher.poll()
    finally:
        launcher.close()
    squeues = [argv for argv, _ in commands.calls if argv[0] == "squeue"]
    assert squeues == [["squeue", "--noheader", "--states=all", "--format=%i|%T|%r|%N|%j|%Z",
                        "--jobs=42,43,44"]]
    assert jobs[0].details()["state"] == "RUNNING" and not jobs[0].exited.is_set()
    by_job = {handle.job_id: exit for handle, exit in ended}
    assert by_job["43"].error_type == "slurm_cancelled" and by_job["43"].signal == 15
    assert by_job["44"].reason is None  # forgotten by Slurm: its files decide
