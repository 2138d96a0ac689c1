"""What the Slurm launcher asks Slurm, and how it reads the answers.

Every Slurm command goes through :class:`SlurmCommands` (the launcher's OS seam, so
unit tests can record the calls); the parsing of ``squeue`` and ``scontrol`` output
and the verdict on an ended job are pure functions. Accounting (``sacct``) is not
used: many clusters run without it, and ``squeue --states=all`` plus ``scontrol
show job`` tell what is needed while Slurm remembers the job (``MinJobAge``).
"""
from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

#: Job states of a job that has not started running its script yet.
QUEUED_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD",
                           "REQUEUE_FED", "RESV_DEL_HOLD"})
#: Job states of a job that is over (``COMPLETING``: not yet, its processes are
#: being cleaned up).
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY",
                          "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED",
                          "SPECIAL_EXIT"})

#: How ``squeue`` is asked to describe a job: id, state, reason, node, name, work dir.
SQUEUE_FORMAT = "%i|%T|%r|%N|%j|%Z"

# What slurmstepd writes into the job's stderr when it kills a job over its --mem
# (jobacct_gather's OverMemoryKill reports the job FAILED, not OUT_OF_MEMORY).
_MEMORY_MESSAGES = ("exceeded memory limit", "exceeded job memory limit", "oom-kill")

_COMMAND_TIMEOUT = 30.0


class SlurmError(OSError):
    """A Slurm command failed or did not answer."""


@dataclass(frozen=True)
class JobRow:
    """One job as ``squeue`` shows it (``reason`` "" for none)."""

    job_id: str
    state: str
    reason: str
    node: str
    name: str
    work_dir: str

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class Verdict:
    """Slurm's word on why a job ended, when Slurm ended it (else no verdict)."""

    reason: str
    error_type: str


class SlurmCommands:
    """Runs Slurm's client commands (``sbatch``, ``squeue``, ``scontrol``, ``scancel``)."""

    def run(self, argv: list[str], env: Mapping[str, str] | None = None,
            ) -> subprocess.CompletedProcess:
        """Run ``argv``; its output as text.

        Raises:
            SlurmError: it could not be run or timed out.
        """
        try:
            return subprocess.run(argv, env=None if env is None else dict(env),
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=_COMMAND_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmError(f"{argv[0]} failed: {exc}") from None

    def squeue(self, job_ids: list[str] | None = None) -> dict[str, JobRow]:
        """The jobs named (all of this user's if None), ended ones included while Slurm
        remembers them; a job it forgot is missing from the answer.

        Raises:
            SlurmError: squeue failed (other than for unknown ids).
        """
        argv = ["squeue", "--noheader", "--states=all", f"--format={SQUEUE_FORMAT}"]
        argv += [f"--jobs={','.join(job_ids)}"] if job_ids else [f"--user={_user()}"]
        done = self.run(argv)
        if done.returncode != 0:
            if job_ids and "Invalid job id" in done.stderr:
                return {}  # every one of them is forgotten
            raise SlurmError(f"squeue failed: {done.stderr.strip()}")
        return parse_squeue(done.stdout)

    def exit_status(self, job_id: str) -> tuple[int | None, int | None]:
        """``(code, signal)`` of an ended job from ``scontrol show job``; Nones if unknown."""
        done = self.run(["scontrol", "show", "job", "--oneliner", job_id])
        if done.returncode != 0:
            return None, None
        return parse_exit_code(parse_scontrol(done.stdout).get("ExitCode", ""))

    def scancel(self, job_id: str, *options: str) -> None:
        """Raises: SlurmError (scancel could not be run)."""
        self.run(["scancel", *options, job_id])


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def parse_squeue(text: str) -> dict[str, JobRow]:
    """``squeue --format=SQUEUE_FORMAT`` output, by job id."""
    rows = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6:
            continue
        job_id, state, reason, node, name, work_dir = parts
        rows[job_id] = JobRow(job_id, state, "" if reason == "None" else reason, node, name,
                              work_dir)
    return rows


def parse_scontrol(text: str) -> dict[str, str]:
    """``scontrol show job --oneliner`` output as ``{"JobState": ..., ...}``."""
    fields = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """Slurm's ``ExitCode=code:signal``; the signal is None when 0."""
    code, _, sig = text.partition(":")
    try:
        exit_code, signum = int(code), int(sig or 0)
    except ValueError:
        return None, None
    return (None, signum) if signum else (exit_code, None)


def parse_job_id(sbatch_output: str) -> str:
    """The job id ``sbatch --parsable`` printed (``id`` or ``id;cluster``).

    Raises:
        SlurmError: there is none.
    """
    job_id = sbatch_output.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed no job id: {sbatch_output.strip()!r}")
    return job_id


def verdict(row: JobRow, stderr_tail: str, *, terminating: bool) -> Verdict | None:
    """Why Slurm ended the job, if Slurm did; None when the job's own exit says it all
    (it completed, the server failed and said so, or the backend cancelled it)."""
    job, state = row.job_id, row.state
    if state == "CANCELLED":
        if terminating:
            return None
        return Verdict(f"Slurm cancelled job {job} (scancel by its owner or an admin)",
                       "slurm_cancelled")
    if state == "OUT_OF_MEMORY" or _over_memory(stderr_tail):
        return Verdict(f"Slurm killed job {job}: it went over its memory limit (--mem)",
                       "memory_limit")
    if state == "TIMEOUT":
        return Verdict(f"Slurm ended job {job} at its time limit (--time)", "slurm_time_limit")
    if state in ("NODE_FAIL", "BOOT_FAIL"):
        return Verdict(f"the node of Slurm job {job} ({row.node or 'unknown'}) failed",
                       "node_failure")
    if state == "PREEMPTED":
        return Verdict(f"Slurm preempted job {job}", "slurm_preempted")
    if state in ("DEADLINE", "REVOKED"):
        return Verdict(f"Slurm ended job {job} ({state.lower()})", "slurm_cancelled")
    if state == "FAILED" and row.reason not in ("NonZeroExitCode", ""):
        return Verdict(f"Slurm job {job} failed: {row.reason}", "slurm_failed")
    return None


def _over_memory(stderr_tail: str) -> bool:
    lowered = stderr_tail.lower()
    return "slurmstepd" in lowered and any(m in lowered for m in _MEMORY_MESSAGES)


def job_dir_sim(row: JobRow, runs_dir: Path) -> str | None:
    """The sim id of a job whose working directory is a run dir's experiment folder
    under ``runs_dir``; None for any other job."""
    work = Path(row.work_dir)
    if work.parent.parent != runs_dir:
        return None
    return work.parent.name
