"""Spawning, watching and stopping simulation-server processes.

Everything the backend does to a process happens here: spawn in its own
session, reap in one thread, stop with SIGTERM then SIGKILL to the whole group,
measure resources. OS calls go through :class:`ProcessOps` so unit tests can
record them.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

import lifecycle
from lifecycle.messages import EXPERIMENT_DIR, LOGS_DIR, STDERR_LOG, STDOUT_LOG, TOKEN_ENV

logger = logging.getLogger(__name__)

# simserver sits beside lifecycle in the distribution; the child must find both.
_CODE_ROOT = str(Path(lifecycle.__file__).resolve().parent.parent)


@dataclass(frozen=True)
class Exit:
    """How a process ended: ``code`` for an exit, ``signal`` when killed by one.
    Both None for an adopted process whose status the OS does not tell us."""

    code: int | None
    signal: int | None

    @property
    def signal_name(self) -> str | None:
        if self.signal is None:
            return None
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"

    def describe(self) -> str:
        if self.signal is not None:
            return f"killed by {self.signal_name}"
        if self.code is not None:
            return f"exit code {self.code}"
        return "exit status unknown"


class ProcessOps:
    """The OS seam: spawning, signalling and the clock."""

    clock = staticmethod(time.monotonic)

    def spawn(self, argv: list[str], *, cwd: Path, env: dict[str, str],
              stdout: Path, stderr: Path) -> subprocess.Popen:
        with open(stdout, "ab") as out, open(stderr, "ab") as err:
            return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True,
                                    close_fds=True)

    def signal_group(self, pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def signal_process(self, proc: psutil.Process, sig: int) -> None:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            pass


class ServerProcess:
    """A simulation-server process, spawned by us or adopted after a restart.

    One reaper thread waits for it and calls ``on_exit`` once with its
    :class:`Exit`; :attr:`exited` is set at the same time.
    """

    def __init__(self, sim_id: str, ps: psutil.Process, popen: subprocess.Popen | None,
                 on_exit: Callable[[Exit], None]) -> None:
        self.sim_id = sim_id
        self.pid = ps.pid
        self.ps = ps
        self.popen = popen
        self.exit: Exit | None = None
        self.exited = threading.Event()
        self._on_exit = on_exit
        self._measured: dict[int, psutil.Process] = {ps.pid: ps}
        threading.Thread(target=self._reap, name=f"reap-{sim_id}", daemon=True).start()

    def _reap(self) -> None:
        if self.popen is not None:
            code = self.popen.wait()
            self.exit = Exit(code, None) if code >= 0 else Exit(None, -code)
        else:
            try:
                code = self.ps.wait()
            except psutil.Error:
                code = None
            self.exit = Exit(code, None)
        logger.info("exited: sim %s (pid %d) %s", self.sim_id, self.pid, self.exit.describe())
        self.exited.set()
        self._on_exit(self.exit)

    def tree(self) -> list[psutil.Process]:
        """The process and every descendant still alive."""
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.Error:
            return []

    def resources(self) -> dict[str, float]:
        """CPU percent (since the last call) and RSS bytes of the whole tree."""
        cpu, rss = 0.0, 0
        for proc in self.tree():
            proc = self._measured.setdefault(proc.pid, proc)
            try:
                cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        return {"cpu_percent": round(cpu, 1), "rss_bytes": rss}


class Launcher:
    """Spawns simulation servers and stops them, escalating when they do not obey."""

    def __init__(self, ops: ProcessOps | None = None) -> None:
        self.ops = ops or ProcessOps()

    def spawn(self, sim_id: str, run_dir: Path, token: str,
              on_exit: Callable[[Exit], None]) -> ServerProcess:
        """Start ``python -m simserver`` for a prepared run directory.

        Raises:
            OSError: the process could not be started.
        """
        env = dict(os.environ)
        env[TOKEN_ENV] = token
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_CODE_ROOT, env.get("PYTHONPATH", "")) if p)
        logs = run_dir / LOGS_DIR
        popen = self.ops.spawn([sys.executable, "-m", "simserver", "--run-dir", str(run_dir)],
                               cwd=run_dir / EXPERIMENT_DIR, env=env,
                               stdout=logs / STDOUT_LOG, stderr=logs / STDERR_LOG)
        logger.info("spawned: sim %s (pid %d)", sim_id, popen.pid)
        return ServerProcess(sim_id, psutil.Process(popen.pid), popen, on_exit)

    def adopt(self, sim_id: str, pid: int, create_time: float,
              on_exit: Callable[[Exit], None]) -> ServerProcess | None:
        """Attach to a live simulation server left by an earlier backend.

        Returns None unless ``pid`` is alive and is the same process (its create
        time matches), so a recycled pid is never mistaken for it.
        """
        try:
            ps = psutil.Process(pid)
            if abs(ps.create_time() - create_time) > 0.01 or not ps.is_running():
                return None
        except psutil.Error:
            return None
        logger.info("adopted: sim %s (pid %d)", sim_id, pid)
        return ServerProcess(sim_id, ps, None, on_exit)

    def terminate(self, proc: ServerProcess, grace: float) -> None:
        """SIGTERM the process group and tree; SIGKILL what is left after ``grace`` s."""
        tree = proc.tree()
        if not proc.exited.is_set():
            self.ops.signal_group(proc.pid, signal.SIGTERM)
            for child in tree[1:]:
                self.ops.signal_process(child, signal.SIGTERM)
            if not proc.exited.wait(grace):
                logger.warning("killing sim %s (pid %d) with SIGKILL", proc.sim_id, proc.pid)
        self._kill(proc, tree)

    def find_servers(self, runs_dir: Path) -> dict[str, psutil.Process]:
        """Simulation-server processes of run directories under ``runs_dir``, by sim id."""
        found: dict[str, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            argv = proc.info.get("cmdline") or []
            if "simserver" not in argv or "--run-dir" not in argv:
                continue
            try:
                run_dir = Path(argv[argv.index("--run-dir") + 1])
            except IndexError:
                continue
            if run_dir.parent == runs_dir:
                found[run_dir.name] = proc
        return found

    def kill_orphan(self, sim_id: str, proc: psutil.Process) -> None:
        """SIGKILL a simulation server no record owns, with its process group."""
        logger.warning("killing orphan: sim %s (pid %d)", sim_id, proc.pid)
        try:
            tree = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return
        if os.getpgid(proc.pid) == proc.pid:
            self.ops.signal_group(proc.pid, signal.SIGKILL)
        for member in tree:
            self.ops.signal_process(member, signal.SIGKILL)
        psutil.wait_procs(tree, timeout=5)

    def kill_leftovers(self, proc: ServerProcess) -> None:
        """SIGKILL whatever the script left behind once the server is gone."""
        self._kill(proc, proc.tree())

    def _kill(self, proc: ServerProcess, tree: list[psutil.Process]) -> None:
        self.ops.signal_group(proc.pid, signal.SIGKILL)
        for member in tree:
            self.ops.signal_process(member, signal.SIGKILL)
        psutil.wait_procs(tree[1:], timeout=5)
        proc.exited.wait(5)
