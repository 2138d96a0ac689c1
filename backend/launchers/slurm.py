"""The Slurm launcher: each simulation server is one Slurm batch job.

``sbatch`` runs ``python -m simserver`` in the run directory, which lives on a
filesystem the backend and the compute nodes share (``--shared-dir``). The server
binds its control API to its node's address (``NODE_HOST``) and says where it is in
``server.json``; from there the backend drives it as it drives a local one.

One thread polls Slurm for all of the backend's jobs with one ``squeue`` per
interval; a job that is over is reported with Slurm's verdict (``Exit.reason``,
``Exit.error_type``) when Slurm ended it (time limit, memory, node failure, an
admin's ``scancel``). The job id is written to ``job.json`` at submission, so a
restarted backend adopts the job by id. Stop escalates with ``scancel --full
--signal=TERM`` (the batch shell and all it runs), then ``scancel``.

The control token travels in the job's environment (``sbatch --export=ALL`` with the
variable set in sbatch's own environment): never on a command line, never in the job
script. Slurm keeps a job's environment in files only the Slurm user reads
(``StateSaveLocation``, mode 0600); the simulation server removes it from its own
environment at start, so the script and what it starts do not inherit it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shlex
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from backend.config import Config
from backend.launchers.base import (
    Exit, ExitCallback, Launcher, LaunchSpec, ServerHandle, file_tail, read_run_json,
    server_command, server_environment,
)
from backend.launchers.slurm_queue import (
    QUEUED_STATES, JobRow, SlurmCommands, SlurmError, job_dir_sim, parse_job_id, verdict,
)
from lifecycle.experiment import EXPERIMENT_FILE
from lifecycle.messages import (
    EXPERIMENT_DIR, LOGS_DIR, NODE_HOST, STDERR_LOG, STDOUT_LOG,
)
from storage import write_json_atomic

logger = logging.getLogger(__name__)

#: Files the launcher writes into a run directory.
JOB_FILE = "job.json"            # {"job_id", "job_name", "submitted_at"}, at submission
JOB_SCRIPT = "simserver.sbatch"  # the batch script (it holds no secret)
#: Job names are this and the sim id.
JOB_PREFIX = "simbackend-"

# Variables of the backend that a job must not carry to a compute node: storage
# credentials and the backend's own settings (a simulation server needs neither).
# How long to wait for Slurm to end a job after the last scancel (its KillWait).
_KILL_WAIT = 60.0
# How long a starting backend waits for the orphan jobs it cancelled to be over.
_ORPHAN_WAIT = 30.0
# Seconds between two readiness checks of Slurm when no job is polled.
_PROBE_INTERVAL = 5.0
_STDERR_LINES = 20
_NO_RESOURCES = {"cpu_percent": 0.0, "rss_bytes": 0}


class SlurmJob(ServerHandle):
    """A simulation server submitted as a Slurm job (pending, running or over)."""

    def __init__(self, sim_id: str, job_id: str, run_dir: Path, on_exit: ExitCallback) -> None:
        super().__init__(sim_id, on_exit)
        self.job_id = job_id
        self.run_dir = run_dir
        #: What ``squeue`` said last; None before the first poll.
        self.row: JobRow | None = None
        #: The backend cancelled it: a CANCELLED job is then no verdict of Slurm's.
        self.terminating = False

    def describe(self) -> str:
        return f"slurm job {self.job_id}"

    def details(self) -> dict[str, Any]:
        row = self.row
        return {"name": "slurm", "job_id": self.job_id,
                "state": row.state if row else None,
                "reason": row.reason if row and row.reason else None,
                "node": row.node if row and row.node else None}

    def queued(self) -> bool:
        return self.row is None or self.row.state in QUEUED_STATES

    def resources(self) -> dict[str, float]:
        """Not measured from the backend (the job runs on another host): Slurm
        enforces the job's ``--mem`` on its node."""
        return dict(_NO_RESOURCES)


class SlurmLauncher(Launcher):
    """Submits each simulation server as a batch job and follows the jobs."""

    name = "slurm"

    def __init__(self, config: Config, commands: SlurmCommands | None = None) -> None:
        self.config = config
        self.commands = commands or SlurmCommands()
        self.bind_host = config.slurm_bind_host or NODE_HOST
        self._jobs: dict[str, SlurmJob] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._problem: str | None = None
        self._checked = 0.0  # when Slurm last answered or failed (monotonic)
        self._poller = threading.Thread(target=self._poll_forever, name="slurm-poll",
                                        daemon=True)
        self._poller.start()

    # -- starting and adopting ------------------------------------------------------

    def spawn(self, spec: LaunchSpec, on_exit: ExitCallback) -> SlurmJob:
        """Submit the job; it may wait in Slurm's queue.

        Raises:
            SlurmError: sbatch could not be run or refused the job.
        """
        script = self._write_script(spec.run_dir)
        options = self.sbatch_options(spec)
        done = self.commands.run(["sbatch", "--parsable", *options, str(script)],
                                 env=job_environment(spec.token))
        if done.returncode != 0:
            raise SlurmError(f"sbatch refused the job: {done.stderr.strip()}")
        job_id = parse_job_id(done.stdout)
        write_json_atomic(spec.run_dir / JOB_FILE, {
            "job_id": job_id, "job_name": JOB_PREFIX + spec.sim_id, "submitted_at": time.time()})
        job = SlurmJob(spec.sim_id, job_id, spec.run_dir, on_exit)
        self._watch(job)
        logger.info("spawned: sim %s (slurm job %s: sbatch %s)", spec.sim_id, job_id,
                    shlex.join(options))
        return job

    def sbatch_options(self, spec: LaunchSpec) -> list[str]:
        """The job's ``sbatch`` options: where it runs and logs, its limits, then the
        site's (``--slurm-partition``, ``--slurm-account``, ``--slurm-options``), which
        come last so they can override."""
        logs = spec.run_dir / LOGS_DIR
        options = [f"--job-name={JOB_PREFIX}{spec.sim_id}",
                   f"--chdir={spec.run_dir / EXPERIMENT_DIR}",
                   f"--output={logs / STDOUT_LOG}", f"--error={logs / STDERR_LOG}",
                   "--open-mode=append", "--no-requeue", "--export=ALL",
                   "--nodes=1", "--ntasks=1"]
        options += limit_options(spec.limits, nest_threads(spec.run_dir / EXPERIMENT_DIR),
                                 margin=2 * self.config.stop_grace)
        if self.config.slurm_partition:
            options.append(f"--partition={self.config.slurm_partition}")
        if self.config.slurm_account:
            options.append(f"--account={self.config.slurm_account}")
        return options + shlex.split(self.config.slurm_options)

    def _write_script(self, run_dir: Path) -> Path:
        path = run_dir / JOB_SCRIPT
        path.write_text(
            "#!/bin/sh\n"
            "# simbackend: the simulation server of one run. Its control token comes in\n"
            "# the job's environment, never in this script.\n"
            f"exec {shlex.join(server_command(run_dir, self.config.slurm_python))}\n",
            encoding="utf-8")
        return path

    def adopt(self, sim_id: str, run_dir: Path, on_exit: ExitCallback) -> SlurmJob | None:
        """Follow again the job ``job.json`` names, if Slurm says it is not over and
        it is this run's job (its name). If Slurm cannot be asked, the job is adopted
        all the same: the poller learns its fate once Slurm answers."""
        record = read_run_json(run_dir, JOB_FILE)
        if not isinstance(record, dict) or not str(record.get("job_id", "")).isdigit():
            return None
        job = SlurmJob(sim_id, str(record["job_id"]), run_dir, on_exit)
        try:
            row = self.commands.squeue([job.job_id]).get(job.job_id)
        except SlurmError as exc:
            logger.warning("sim %s: adopting slurm job %s unchecked: %s", sim_id, job.job_id,
                           exc)
            row = None
        else:
            if row is None or row.final or row.name != JOB_PREFIX + sim_id:
                return None
        job.row = row
        self._watch(job)
        logger.info("adopted: sim %s (slurm job %s)", sim_id, job.job_id)
        return job

    # -- ending -------------------------------------------------------------------

    def terminate(self, handle: ServerHandle, grace: float) -> None:
        """``scancel --full --signal=TERM`` (the batch shell and every step), then
        ``scancel`` after ``grace`` s; a job still queued is just cancelled."""
        job = _slurm(handle)
        job.terminating = True
        if not job.exited.is_set():
            if job.queued():
                self._cancel(job)
            else:
                self._cancel(job, "--full", "--signal=TERM")
                if not job.exited.wait(grace):
                    logger.warning("killing sim %s (slurm job %s) with scancel", job.sim_id,
                                   job.job_id)
                    self._cancel(job)
        if not job.exited.wait(_KILL_WAIT):
            logger.error("sim %s: slurm job %s is not over %g s after scancel", job.sim_id,
                         job.job_id, _KILL_WAIT)

    def _cancel(self, job: SlurmJob, *options: str) -> None:
        try:
            self.commands.scancel(job.job_id, *options)
        except SlurmError as exc:
            logger.error("sim %s: %s", job.sim_id, exc)

    def kill_leftovers(self, handle: ServerHandle) -> None:
        """Nothing to do: Slurm kills what a job left running when it ends."""

    def clean_orphans(self, runs_dir: Path, owned: dict[str, ServerHandle]) -> None:
        """Cancel the jobs of run dirs under ``runs_dir`` that no handle owns."""
        try:
            rows = self.commands.squeue()
        except SlurmError as exc:
            logger.error("could not look for orphan Slurm jobs: %s", exc)
            return
        cancelled = []
        for row in rows.values():
            sim_id = job_dir_sim(row, runs_dir)
            if row.final or sim_id is None or not row.name.startswith(JOB_PREFIX):
                continue
            handle = owned.get(sim_id)
            if isinstance(handle, SlurmJob) and handle.job_id == row.job_id:
                continue
            logger.warning("cancelling orphan: sim %s (slurm job %s)", sim_id, row.job_id)
            try:
                self.commands.scancel(row.job_id)
                cancelled.append(row.job_id)
            except SlurmError as exc:
                logger.error("could not cancel orphan slurm job %s: %s", row.job_id, exc)
        if cancelled:
            self._wait_over(cancelled, _ORPHAN_WAIT)

    def _wait_over(self, job_ids: list[str], timeout: float) -> None:
        """Wait until Slurm says the jobs are over (their run dirs are then left alone)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                rows = self.commands.squeue(job_ids)
            except SlurmError:
                return
            if all(row.final for row in rows.values()):
                return
            time.sleep(self.config.slurm_poll_interval)
        logger.error("slurm jobs %s are not over %g s after scancel", ",".join(job_ids),
                     timeout)

    def problem(self, runs_dir: Path) -> str | None:
        if shutil.which("sbatch") is None:
            return "sbatch is not on the PATH: Slurm's client commands are missing"
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
        if not os.access(runs_dir, os.W_OK):
            return f"cannot write run directories in {runs_dir}"
        if time.monotonic() - self._checked > _PROBE_INTERVAL:
            with self._lock:
                idle = not self._jobs
            if idle:  # the poller says nothing meanwhile
                self._probe()
        return self._problem

    def _probe(self) -> None:
        try:
            self.commands.squeue()
            self._problem = None
        except SlurmError as exc:
            self._problem = f"Slurm does not answer: {exc}"
        self._checked = time.monotonic()

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._poller.join(5.0)

    # -- following the jobs ---------------------------------------------------------------

    def _watch(self, job: SlurmJob) -> None:
        with self._lock:
            self._jobs[job.job_id] = job

    def _poll_forever(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.config.slurm_poll_interval)
            self._wake.clear()
            if self._closed.is_set():
                return
            try:
                self.poll()
            except Exception:
                logger.exception("polling Slurm failed")

    def poll(self) -> None:
        """One ``squeue`` for every job followed; report those that are over."""
        with self._lock:
            jobs = dict(self._jobs)
        if not jobs:
            return
        try:
            rows = self.commands.squeue(list(jobs))
            self._problem = None
        except SlurmError as exc:
            if self._problem is None:
                logger.error("cannot follow the Slurm jobs: %s", exc)
            self._problem = f"Slurm does not answer: {exc}"
            return
        finally:
            self._checked = time.monotonic()
        for job_id, job in jobs.items():
            row = rows.get(job_id)
            if row is None or row.final:
                self._ended(job, row)
                continue
            if job.row is None or job.row.state != row.state:
                logger.info("slurm job %s of sim %s: %s (%s)", job_id, job.sim_id, row.state,
                            row.node or row.reason or "no reason given")
            job.row = row

    def _ended(self, job: SlurmJob, row: JobRow | None) -> None:
        """Report a job that is over, with Slurm's verdict if Slurm ended it. A job
        Slurm no longer remembers leaves the decision to what the server wrote."""
        with self._lock:
            self._jobs.pop(job.job_id, None)
        if row is None:
            exit = Exit(None, None)
            state = "forgotten by Slurm"
        else:
            job.row, state = row, row.state
            code, signum = self.commands.exit_status(row.job_id)
            tail = file_tail(job.run_dir / LOGS_DIR / STDERR_LOG, _STDERR_LINES)
            found = verdict(row, tail, terminating=job.terminating)
            exit = Exit(code, signum, found.reason if found else None,
                        found.error_type if found else None)
        logger.info("exited: sim %s (slurm job %s, %s) %s", job.sim_id, job.job_id, state,
                    exit.describe())
        job._ended(exit)


def _slurm(handle: ServerHandle) -> SlurmJob:
    if not isinstance(handle, SlurmJob):
        raise TypeError(f"the Slurm launcher cannot act on {handle.describe()}")
    return handle


def job_environment(token: str) -> dict[str, str]:
    """sbatch's environment, which the job inherits: the backend's, less its secrets,
    plus the control token."""
    # sbatch itself needs the SLURM_* settings (SLURM_CONF ...); the job inherits them.
    return server_environment(token, extra=("SLURM_*",))


def limit_options(limits: dict[str, Any], cpus: int, margin: float) -> list[str]:
    """A run's limits as Slurm's: ``--cpus-per-task`` (NEST threads), ``--mem`` (the
    memory limit), ``--time`` (the real-time limit plus the start timeout and
    ``margin`` for a graceful end, in whole minutes: Slurm's unit)."""
    options = [f"--cpus-per-task={cpus}"]
    if limits.get("memory_mb"):
        options.append(f"--mem={math.ceil(limits['memory_mb'])}M")
    if limits.get("real_time"):
        seconds = limits["real_time"] + (limits.get("start_timeout") or 0) + margin
        options.append(f"--time={math.ceil(seconds / 60)}")
    return options


def nest_threads(experiment_dir: Path) -> int:
    """The most ``threads`` any NEST engine of the experiment asks for (1 if none);
    leniently: the simulation server reports a bad value at initialize."""
    try:
        config = json.loads((experiment_dir / EXPERIMENT_FILE).read_text(encoding="utf-8"))
        engines = config.get("engines") or {}
        threads = [engine.get("threads", 1) for engine in engines.values()
                   if isinstance(engine, dict) and engine.get("type") == "nest"]
    except (OSError, ValueError, AttributeError):
        return 1
    return max([t for t in threads if isinstance(t, int) and not isinstance(t, bool)
                and t >= 1] or [1])
