"""The local launcher: simulation servers as child processes of this host.

Spawn in a session of its own, inside the run's boundary (a cgroup, or an
environment marker: :mod:`backend.launchers.boundary`) and with only the environment
it needs (:mod:`backend.launchers.environment`); reap in one thread per process;
stop with SIGTERM then SIGKILL to the process group and every process of the
boundary; measure resources over the boundary. OS calls go through
:class:`ProcessOps`, so unit tests can record them.
"""
from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import psutil

from backend.launchers.base import (
    Exit, ExitCallback, Launcher, LaunchSpec, ServerHandle, read_server_info, server_command,
    server_environment,
)
from backend.launchers.boundary import RUN_ENV, Boundary, MarkerBoundary, join_argv
from lifecycle.messages import (
    EXPERIMENT_DIR, LOGS_DIR, SERVER_FILE, STDERR_LOG, STDOUT_LOG, ServerInfo,
)

if TYPE_CHECKING:
    from backend.launchers.forks import ForkedProcess

logger = logging.getLogger(__name__)
# How long a SIGKILLed process tree gets to disappear before we stop waiting.
_KILL_WAIT = 5.0


class ProcessOps:
    """The OS seam of the local launcher: spawning, signalling, waiting."""

    clock = staticmethod(time.monotonic)

    def spawn(self, argv: list[str], *, cwd: Path, env: dict[str, str],
              stdout: Path, stderr: Path, join: Path | None = None) -> subprocess.Popen:
        """Start ``argv``; with ``join`` (a ``cgroup.procs``), inside that cgroup from
        its first instruction on."""
        if join is not None:
            argv = join_argv(join, argv)
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

    def wait_procs(self, procs: list[psutil.Process], timeout: float) -> None:
        psutil.wait_procs(procs, timeout=timeout)


class ProcessTable:
    """Whose child each process is, read at most every ``ttl`` s: a read scans all of
    ``/proc``, and the watchdog measures every running server in turn (psutil's
    ``children`` would scan once for each)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._read: tuple[float, dict[int, list[int]]] = (-ttl, {})

    def descendants(self, pid: int) -> list[int]:
        with self._lock:
            when, children = self._read
            if time.monotonic() - when > self.ttl:
                children = {}
                for child, parent in _parents():
                    children.setdefault(parent, []).append(child)
                self._read = (time.monotonic(), children)
        found, todo = [], [pid]
        while todo:
            below = children.get(todo.pop(), [])
            found.extend(below)
            todo.extend(below)
        return found


def _parents() -> Iterator[tuple[int, int]]:
    """(pid, parent pid) of every process: from ``/proc/<pid>/stat`` where there is one
    (a third of what asking psutil costs), else from psutil."""
    if not os.path.isdir("/proc/self"):
        yield from ((p.pid, p.info["ppid"]) for p in psutil.process_iter(["ppid"]))
        return
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue  # gone meanwhile
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            yield int(entry.name), int(stat[stat.rfind(b")") + 2:].split(b" ", 2)[1])


#: The watchdog's table, read at most once a second. Every process of a run is in its
#: boundary, whose members (``cgroup.procs``, or the marker's scan) are read at every
#: check; the walk of the tree is for a process that left the boundary and is still a
#: descendant. A read scans every process of the host (~3 ms for ~100 of them here, ten
#: times that on a busy login node): at every check, five times a second, it was most of
#: what the backend did while a run ran (18 of its 26 ms of CPU a second).
_TABLE = ProcessTable(ttl=1.0)


class LocalServer(ServerHandle):
    """A simulation-server process on this host, spawned by us or adopted.

    One reaper thread waits for it and reports its :class:`Exit`.
    """

    def __init__(self, sim_id: str, ps: psutil.Process,
                 popen: subprocess.Popen | ForkedProcess | None, on_exit: ExitCallback,
                 boundary: Boundary) -> None:
        super().__init__(sim_id, on_exit)
        self.pid = ps.pid
        self.ps = ps
        self.popen = popen
        self.boundary = boundary
        self._measured: dict[int, psutil.Process] = {ps.pid: ps}
        threading.Thread(target=self._reap, name=f"reap-{sim_id}", daemon=True).start()

    def describe(self) -> str:
        return f"pid {self.pid}"

    def _reap(self) -> None:
        if self.popen is not None:
            code = self.popen.wait()  # None: a forked server whose fork server died first
            exit = Exit(code, None) if code is None or code >= 0 else Exit(None, -code)
        else:
            try:
                code = self.ps.wait()
            except psutil.Error:
                code = None
            exit = Exit(code, None)
        logger.info("exited: sim %s (pid %d) %s", self.sim_id, self.pid, exit.describe())
        self._ended(exit)

    def tree(self, table: ProcessTable | None = None) -> list[psutil.Process]:
        """The server, its descendants, and every other process of its run's boundary
        (those that left the tree: double forks, ``setsid``). ``table``: whose child
        each process is, as read lately for all runs (default: read now)."""
        procs = [self.ps]
        try:
            if table is None:
                procs.extend(self.ps.children(recursive=True))
            else:
                procs.extend(filter(None, map(self._process, table.descendants(self.pid))))
        except psutil.Error:
            pass  # the server is gone: what is left of the run is in its boundary
        procs.extend(self.boundary.members(self.sim_id))
        return list({proc.pid: proc for proc in procs}.values())

    def _process(self, pid: int) -> psutil.Process | None:
        """The process ``pid`` as measured before, or now; None once it is gone (a table
        read up to a second ago may name one)."""
        try:
            return self._measured.get(pid) or psutil.Process(pid)
        except psutil.Error:
            return None

    def resources(self) -> dict[str, float]:
        cpu, rss = 0.0, 0
        for proc in self.tree(_TABLE):
            proc = self._measured.setdefault(proc.pid, proc)
            try:
                cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        return {"cpu_percent": round(cpu, 1), "rss_bytes": rss}


class LocalLauncher(Launcher):
    """Runs each simulation server as a child process of the backend."""

    name = "local"

    def __init__(self, ops: ProcessOps | None = None, boundary: Boundary | None = None,
                 script_env: Iterable[str] = ()) -> None:
        """``boundary``: what holds each run (default: a marker of this launcher's own);
        ``script_env``: names (``*`` ends a prefix) passed to servers besides the usual."""
        self.ops = ops or ProcessOps()
        self.boundary = boundary or MarkerBoundary(secrets.token_hex(6))
        self.script_env = tuple(script_env)

    def facts(self) -> dict[str, Any]:
        return {"name": self.name, "boundary": self.boundary.kind}

    def spawn(self, spec: LaunchSpec, on_exit: ExitCallback) -> LocalServer:
        env = server_environment(spec.token, extra=self.script_env)
        env[RUN_ENV] = self.boundary.marker(spec.sim_id)
        logs = spec.run_dir / LOGS_DIR
        popen = self.ops.spawn(
            server_command(spec.run_dir),
            cwd=spec.run_dir / EXPERIMENT_DIR, env=env,
            stdout=logs / STDOUT_LOG, stderr=logs / STDERR_LOG,
            join=self.boundary.prepare(spec.sim_id))
        logger.info("spawned: sim %s (pid %d)", spec.sim_id, popen.pid)
        return LocalServer(spec.sim_id, psutil.Process(popen.pid), popen, on_exit,
                           self.boundary)

    def adopt(self, sim_id: str, run_dir: Path, on_exit: ExitCallback) -> LocalServer | None:
        """Attach to the process ``server.json`` names, if it is alive and is the same
        process (its create time matches), so a recycled pid is never mistaken for it."""
        info = self.server_info(run_dir)
        ps = recorded_process(info) if info is not None else None
        if ps is None:
            return None
        logger.info("adopted: sim %s (pid %d)", sim_id, info.pid)
        return LocalServer(sim_id, ps, None, on_exit, self.boundary)

    def terminate(self, handle: ServerHandle, grace: float) -> None:
        """SIGTERM the process group and the run's processes; SIGKILL what is left
        after ``grace`` s."""
        proc = _local(handle)
        tree = proc.tree()
        if not proc.exited.is_set():
            self.ops.signal_group(proc.pid, signal.SIGTERM)
            for child in tree[1:]:
                self.ops.signal_process(child, signal.SIGTERM)
            if not proc.exited.wait(grace):
                logger.warning("killing sim %s (pid %d) with SIGKILL", proc.sim_id, proc.pid)
        self._kill(proc, tree)

    def kill_leftovers(self, handle: ServerHandle) -> None:
        proc = _local(handle)
        self._kill(proc, proc.tree())

    def clean_orphans(self, runs_dir: Path, owned: dict[str, ServerHandle]) -> None:
        """Kill servers no handle owns, then every run boundary no handle owns (what
        scripts of runs that ended while no backend ran left behind)."""
        for sim_id, proc in _find_servers(runs_dir).items():
            handle = owned.get(sim_id)
            if isinstance(handle, LocalServer) and handle.pid == proc.pid:
                continue
            logger.warning("killing orphan: sim %s (pid %d)", sim_id, proc.pid)
            try:
                tree = [proc, *proc.children(recursive=True)]
                own_group = os.getpgid(proc.pid) == proc.pid
            except (psutil.Error, ProcessLookupError):
                continue
            if own_group:
                self.ops.signal_group(proc.pid, signal.SIGKILL)
            for member in tree:
                self.ops.signal_process(member, signal.SIGKILL)
            self.ops.wait_procs(tree, _KILL_WAIT)
        for sim_id in self.boundary.runs() - set(owned):
            logger.warning("killing orphan run: sim %s (%s)", sim_id, self.boundary.kind)
            self.boundary.kill(sim_id)

    def problem(self, runs_dir: Path) -> str | None:
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
        if not (os.access(sys.executable, os.X_OK) and os.access(runs_dir, os.W_OK)):
            return f"cannot run {Path(sys.executable).name} in the runs folder"
        return None

    def close(self) -> None:
        self.boundary.close()

    def _kill(self, proc: LocalServer, tree: list[psutil.Process]) -> None:
        self.ops.signal_group(proc.pid, signal.SIGKILL)
        for member in tree:
            self.ops.signal_process(member, signal.SIGKILL)
        self.boundary.kill(proc.sim_id)  # waits for the last one, wherever it went
        proc.exited.wait(_KILL_WAIT)


def _local(handle: ServerHandle) -> LocalServer:
    if not isinstance(handle, LocalServer):
        raise TypeError(f"the local launcher cannot act on {handle.describe()}")
    return handle


def recorded_process(info: ServerInfo) -> psutil.Process | None:
    """The live process ``server.json`` names, if it is that process (its create time
    matches: a recycled pid is never mistaken for it)."""
    try:
        ps = psutil.Process(info.pid)
        if abs(ps.create_time() - info.create_time) > 0.01 or not ps.is_running():
            return None
    except psutil.Error:
        return None
    return ps


def _find_servers(runs_dir: Path) -> dict[str, psutil.Process]:
    """Simulation-server processes of run directories under ``runs_dir``, by sim id:
    by their command line, and (a warm server handed a run has no ``--run-dir`` on
    it) by their ``server.json``."""
    found = _recorded_servers(runs_dir)
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


def _recorded_servers(runs_dir: Path) -> dict[str, psutil.Process]:
    found: dict[str, psutil.Process] = {}
    for path in runs_dir.glob(f"*/{SERVER_FILE}"):
        info = read_server_info(path.parent)
        proc = recorded_process(info) if info is not None else None
        if proc is not None:
            found[path.parent.name] = proc
    return found
