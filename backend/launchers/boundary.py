"""Run boundaries: every process a simulation starts stays inside its run's boundary.

A script can leave its process tree: a double fork with ``setsid`` leaves a process
whose parent is init, which neither a walk of the tree (stop escalation, the memory
watchdog) nor the process group finds. A boundary is what it cannot leave:

- ``cgroup``: a cgroup v2 per run, ``<the backend's cgroup>/simbackend-<key>/sim-<id>``.
  The server joins it before it runs a line of Python (``sh -c 'echo $$ >
  cgroup.procs && exec python ...'``), so every process of the run is born in it;
  ``cgroup.procs`` lists them all and ``cgroup.kill`` ends them all at once, forks
  in flight included.
- ``marker``: where no cgroup can be made, every process of the run inherits
  ``SIMBACKEND_RUN=<sim_id>:<key>`` in its environment, read back from
  ``/proc/<pid>/environ``, and is swept by it. Weaker: a process that drops its
  environment (``env -i``) and detaches escapes it; nothing short of privileges
  leaves a cgroup.

``<key>`` names the backend's runs folder, so two backends on one host (each with its
own data dir) never touch each other's runs, even when their simulation ids match.
"""
from __future__ import annotations

import abc
import hashlib
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

#: The variable every process of a run inherits: ``<sim_id>:<key>``.
RUN_ENV = "SIMBACKEND_RUN"
#: Accepted by ``--run-boundary``; ``auto`` takes a cgroup where the machine allows one.
MODES = ("auto", "cgroup", "marker")
#: How long killing a run waits for its last process to go.
KILL_WAIT = 5.0
_SH = "/bin/sh"
_SH_EXE = os.path.realpath(_SH)
# "$0" is the cgroup.procs file; the shell joins the cgroup, then becomes the server.
_JOIN = 'echo $$ > "$0" && exec "$@"'
# Reading every process's environment costs ~0.1 ms each: one scan serves all runs
# for this long (the watchdog asks for each running simulation in turn).
_SCAN_TTL = 0.1
_POLL = 0.01


def join_argv(procs: Path, argv: list[str]) -> list[str]:
    """``argv``, run by a shell that first moves itself into the cgroup of ``procs``."""
    return [_SH, "-c", _JOIN, str(procs), *argv]


def still_joining(pid: int) -> bool:
    """Whether process ``pid`` is still the shell of :func:`join_argv` (it may not have
    joined its cgroup yet), not the program it becomes; False once it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/exe") == _SH_EXE
    except OSError:
        return False


def runs_key(runs_dir: Path) -> str:
    """A short name for a backend's runs folder, the same across its restarts."""
    return hashlib.sha256(str(runs_dir).encode()).hexdigest()[:12]


class Boundary(abc.ABC):
    """What holds all processes of each run of one backend."""

    kind = ""

    def __init__(self, key: str) -> None:
        self.key = key

    def marker(self, sim_id: str) -> str:
        """The value of :data:`RUN_ENV` for the processes of ``sim_id``."""
        return f"{sim_id}:{self.key}"

    def prepare(self, sim_id: str) -> Path | None:
        """Make the boundary of a run about to be spawned; the ``cgroup.procs`` file
        its server must join before it execs, or None (nothing to join).

        Raises:
            OSError: it could not be made.
        """
        return None

    def waiting_room(self) -> Path | None:
        """The ``cgroup.procs`` warm servers of the pool wait in (outside every run's
        boundary), or None: they wait where the backend is."""
        return None

    def enter(self, sim_id: str, pid: int) -> None:  # noqa: B027 - a marker moves nothing
        """Put the running process ``pid`` (a warm server handed the run) into the
        run's boundary. The marker cannot be put into a live process's environment:
        the warm server sets it in its own ``os.environ`` for every process it starts,
        and is itself the run's server (the launcher's handle holds it).

        Raises:
            OSError: it could not be moved.
        """

    def leave(self, sim_id: str, pid: int) -> None:  # noqa: B027 - a marker moves nothing
        """Undo :meth:`enter` for a warm server that was never handed the run: it goes
        back to the waiting room and the run's (empty) boundary is removed.

        Raises:
            OSError: it could not be moved (the caller kills it).
        """

    def close_waiting_room(self) -> None:  # noqa: B027 - a hook: only a cgroup has one
        """Remove the waiting room once the pool has no warm server left."""

    @abc.abstractmethod
    def members(self, sim_id: str) -> list[psutil.Process]:
        """Every live process of the run, wherever in the process tree it went."""

    @abc.abstractmethod
    def kill(self, sim_id: str) -> None:
        """SIGKILL every process of the run, wait (bounded) until none is left, and
        remove the boundary."""

    @abc.abstractmethod
    def runs(self) -> set[str]:
        """The simulation ids that have a boundary (live processes, or a leftover)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the start-up log: the kind and where."""

    def close(self) -> None:  # noqa: B027 - a hook: a marker holds nothing
        """Release what the boundary holds (runs live on)."""


class CgroupBoundary(Boundary):
    """A cgroup v2 per run under ``root`` (``.../simbackend-<key>``)."""

    kind = "cgroup"

    def __init__(self, key: str, root: Path) -> None:
        super().__init__(key)
        self.root = root

    def _dir(self, sim_id: str) -> Path:
        # "sim-": a simulation id such as "cgroup.procs" must not name a control file.
        return self.root / f"sim-{sim_id}"

    def prepare(self, sim_id: str) -> Path:
        group = self._dir(sim_id)
        group.mkdir(parents=True, exist_ok=True)
        return group / "cgroup.procs"

    def waiting_room(self) -> Path:
        room = self.root / "pool"
        room.mkdir(parents=True, exist_ok=True)
        return room / "cgroup.procs"

    def enter(self, sim_id: str, pid: int) -> None:  # noqa: B027 - a marker moves nothing
        # Both cgroups are under root, which this backend made: it may move the process.
        self.prepare(sim_id).write_text(str(pid))

    def leave(self, sim_id: str, pid: int) -> None:
        self.waiting_room().write_text(str(pid))
        _remove(self._dir(sim_id))

    def members(self, sim_id: str) -> list[psutil.Process]:
        return _processes(_cgroup_pids(self._dir(sim_id)))

    def kill(self, sim_id: str) -> None:
        group = self._dir(sim_id)
        deadline = time.monotonic() + KILL_WAIT
        while _populated(group):
            try:
                (group / "cgroup.kill").write_text("1")  # Linux >= 5.14
            except OSError:
                for pid in _cgroup_pids(group):
                    _sigkill(pid)
            if time.monotonic() > deadline:
                logger.error("sim %s: processes of %s survive SIGKILL", sim_id, group)
                return
            time.sleep(_POLL)
        _remove(group)
        self.close()  # this backend's own cgroup lives only while it has runs

    def runs(self) -> set[str]:
        try:
            return {p.name[4:] for p in self.root.iterdir()
                    if p.is_dir() and p.name.startswith("sim-")}
        except OSError:
            return set()

    def describe(self) -> str:
        return f"cgroup v2 {self.root}"

    def close_waiting_room(self) -> None:
        try:
            (self.root / "pool").rmdir()  # only when no warm server waits in it
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        try:
            self.root.rmdir()  # only when no run is left in it
        except OSError:
            pass


class MarkerBoundary(Boundary):
    """Runs told apart by :data:`RUN_ENV` in each process's environment."""

    kind = "marker"

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self._lock = threading.Lock()
        self._scanned = (-_SCAN_TTL, {})  # (when, processes by marker)

    def members(self, sim_id: str) -> list[psutil.Process]:
        return self._scan().get(self.marker(sim_id), [])

    def kill(self, sim_id: str) -> None:
        deadline = time.monotonic() + KILL_WAIT
        # Round after round: a process forking in a loop has children the last round
        # did not see.
        while procs := self._scan(fresh=True).get(self.marker(sim_id)):
            for proc in procs:
                _sigkill(proc.pid)
            if time.monotonic() > deadline:
                logger.error("sim %s: marked processes survive SIGKILL", sim_id)
                return
            time.sleep(_POLL)

    def runs(self) -> set[str]:
        return {marker.rpartition(":")[0] for marker in self._scan(fresh=True)}

    def describe(self) -> str:
        return f"environment marker {RUN_ENV}=<sim_id>:{self.key}"

    def _scan(self, fresh: bool = False) -> dict[str, list[psutil.Process]]:
        with self._lock:
            when, found = self._scanned
            if fresh or time.monotonic() - when > _SCAN_TTL:
                found = _marked(self.key)
                self._scanned = (time.monotonic(), found)
            return found


def open_boundary(mode: str, runs_dir: Path) -> Boundary:
    """The boundary ``mode`` asks for; ``auto``: a cgroup if one can be made and
    joined here, else the environment marker. Logged either way.

    Raises:
        ValueError: an unknown mode, or ``cgroup`` where none can be made.
    """
    if mode not in MODES:
        raise ValueError(f"SIMBACKEND_RUN_BOUNDARY={mode!r} is not one of {', '.join(MODES)}")
    key = runs_key(runs_dir)
    boundary: Boundary
    if mode == "marker":
        boundary, why = MarkerBoundary(key), "asked for"
    else:
        root, why = _cgroup_root(key)
        if root is None and mode == "cgroup":
            raise ValueError(f"SIMBACKEND_RUN_BOUNDARY=cgroup, but {why}")
        boundary = CgroupBoundary(key, root) if root else MarkerBoundary(key)
    logger.info("run boundary: %s (%s)", boundary.describe(), why)
    return boundary


def cgroup_root(key: str) -> Path | None:
    """Where the run cgroups of the backend whose runs folder has ``key`` go, made or
    not; None without a cgroup v2 hierarchy."""
    mount, own = _cgroup2_mount(), _own_cgroup()
    if mount is None or own is None:
        return None
    return mount / own.lstrip("/") / f"simbackend-{key}"


def _cgroup_root(key: str) -> tuple[Path | None, str]:
    """Where this backend's run cgroups go, proven by moving a process into one; or
    None and why not."""
    root = cgroup_root(key)
    if root is None:
        return None, "no cgroup v2 hierarchy is mounted, or this process is in none"
    probe = root / f"probe-{os.getpid()}"
    try:
        probe.mkdir(parents=True, exist_ok=True)
        joined = subprocess.run([_SH, "-c", 'echo $$ > "$0"', str(probe / "cgroup.procs")],
                                stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot make a cgroup under {root.parent}: {exc}"
    finally:
        _remove(probe)
        try:
            root.rmdir()  # made again by the first run
        except OSError:
            pass
    if joined.returncode != 0:
        error = joined.stderr.decode(errors="replace").strip()
        return None, f"cannot move a process into a cgroup under {root.parent}: {error}"
    return root, f"a cgroup under {root.parent} could be made and joined"


def _cgroup2_mount() -> Path | None:
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return Path(parts[1])
    except OSError:
        pass
    return None


def _own_cgroup() -> str | None:
    try:
        with open("/proc/self/cgroup") as groups:
            for line in groups:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def _populated(group: Path) -> bool:
    try:
        return "populated 1" in (group / "cgroup.events").read_text()
    except OSError:
        return False  # gone already


def _cgroup_pids(group: Path) -> list[int]:
    """The pids in ``group`` and in any cgroup a script made inside it."""
    pids: list[int] = []
    for procs in _walk(group, "**/cgroup.procs"):
        try:
            pids.extend(int(line) for line in procs.read_text().split())
        except (OSError, ValueError):
            continue
    return list(dict.fromkeys(pids))


def _walk(group: Path, pattern: str) -> list[Path]:
    """``group.glob(pattern)``, as far as it got: a run's cgroups go away when their last
    process does, and the exit sweep and a stop's escalation may both be walking them then
    (the soak saw FileNotFoundError end either)."""
    found: list[Path] = []
    try:
        found.extend(group.glob(pattern))
    except OSError:
        pass
    return found


def _remove(group: Path) -> None:
    """Remove an empty cgroup and the ones made inside it, deepest first."""
    subs = sorted((p for p in _walk(group, "**/") if p != group), key=lambda p: -len(p.parts))
    for sub in [*subs, group]:
        try:
            sub.rmdir()
        except OSError:
            pass


def _processes(pids: list[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return found


def _marked(key: str) -> dict[str, list[psutil.Process]]:
    """Live processes whose :data:`RUN_ENV` ends in ``key``, by its value."""
    found: dict[str, list[psutil.Process]] = {}
    suffix = f":{key}"
    for proc in psutil.process_iter():
        try:
            value = proc.environ().get(RUN_ENV)
            if value and value.endswith(suffix) and proc.status() != psutil.STATUS_ZOMBIE:
                found.setdefault(value, []).append(proc)
        except psutil.Error:
            continue
    return found


def _sigkill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
