"""The warm pool: simulation servers started ahead of demand, each handed one run.

A :class:`WarmPool` wraps the :class:`~backend.launchers.local.LocalLauncher`. It keeps
``sizes[kind]`` warm servers (``python -m simserver --warm KIND``, see
:mod:`simserver.warm`) per kind: ``nest`` for experiments with a nest engine or a NEST
session, ``python`` for those with python engines only. Each was started like a cold
server (its own session, the run environment the local launcher gives, the pool's
waiting room of the run boundary) and has imported what its runs need. A run of a
kind with an idle warm server is handed to it; any other run (NEURON, an empty pool)
is spawned cold by the local launcher, as without a pool.

Handing a run: the process is set aside for the run and moved into its boundary
(cgroup) while the run's files are fetched (:meth:`WarmPool.reserve`; given back to
the pool if no spawn follows), then its stdin, a pipe only this pool holds, gets one
:class:`~lifecycle.messages.Handoff` (run dir, working directory, environment with the
run's marker, token, logs, limits) and is closed. From then on it is the run's server
like a cold one: the same handle, stop, escalation and resource measures; re-adopted
after a restart from its ``server.json``. A process is never handed a second run: it
is out of the pool before its handoff is written, its channel accepts one message and
is then gone, and it exits when its run ends.

Idle servers that die are replaced (with a growing delay when they keep dying); while a
kind still has a server, its refill waits :data:`REFILL_DELAY` after a handoff, and then
while a run handed in the last :data:`REFILL_MAX_WAIT` seconds still runs, so the
warm-up of the next server does not take the CPU (and the memory bandwidth: on a small
host both cores share it) from the runs just handed; an empty kind is refilled at once.

With ``forks``, once a kind's pool is full the pool starts its fork server
(:mod:`simserver.forks`, the pool's end in :mod:`backend.launchers.forks`), which warms
up once; while it is warm, refills are forked from it (~0.1 s of CPU, not ~1 s). A fork
is ready at once and copies its pages while it waits (``copying`` until it says
:data:`WARM_QUIET`): the pool hands a quiet server first, and holds a copying one while
runs launch, as a warm-up. A fork server that dies is started again after a delay
growing with each death in a row; one that cannot fork (threads, an old kernel) is
not, and the kind's servers are then each warmed on its own.

A warm-up runs at the backend's CPU priority while the host has no run of this backend
(none live, none starting): a backend that just started gets its servers warm as fast
as it can, and the first run it is asked for is handed one further along. From the
moment a run starts (set aside a server, spawned, handed or adopted), every warm-up
still going on drops to a warm-up's priority (:func:`simserver.warm.idle_priority`:
nice +10 and ``SCHED_IDLE``), and so does one that starts while runs are live; a server
taken for a run gets the backend's priority back before it is handed the run. Where the
backend could not raise it back (no CAP_SYS_NICE or RLIMIT_NICE), nothing is lowered.
The warm-ups (and forks' copies) still going on when a run starts are also held
(stopped) until the launches under way have ended (:meth:`WarmPool.launched`), for at
most :data:`WARM_HOLD_MAX` s.

An idle server exits by itself when its backend dies (end of file on its stdin), or is
killed by the kernel if it is held then (:func:`simserver.warm.die_with_parent`: the
thread that starts them, ``pool-fill``, lives as long as the pool); a starting backend
kills any it finds still waiting (:func:`sweep_waiting`, pool or not).
Warm servers hold memory: the pool reserves :data:`WARM_MB` per server of its sizes
from the host's capacity, and starts one only while the host has that much available
and :data:`MIN_FREE_MB` more.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import psutil

from backend.launchers.base import (
    ExitCallback, Launcher, LaunchSpec, ServerHandle, server_environment,
)
from backend.launchers.boundary import RUN_ENV, join_argv, runs_key, still_joining
from backend.launchers.forks import FORK_WAIT, ForkServer
from backend.launchers.local import LocalLauncher, LocalServer, ProcessOps
from lifecycle.errors import InvalidExperiment
from lifecycle.experiment import read_experiment
from lifecycle.messages import (
    EXPERIMENT_DIR, LOGS_DIR, STDERR_LOG, STDOUT_LOG, TOKEN_ENV, WARM_KINDS, WARM_QUIET,
    WARM_READY, Handoff,
)
from simserver.forks import EXIT_CANNOT_FORK
from simserver.warm import give_priority, idle_priority, may_raise_priority

logger = logging.getLogger(__name__)

#: MiB one idle warm server is reckoned to hold (resident, measured on Linux x86-64:
#: NEST 3.10, NumPy and matplotlib ~140 after its throwaway network; the server with
#: NumPy ~40), with margin.
WARM_MB = {"nest": 160.0, "python": 60.0}
#: MiB the host must keep available beyond a warm server for one to be started.
MIN_FREE_MB = 256.0
#: Seconds after a handoff before the pool starts a replacement (while the kind has an
#: idle server), and the longest it waits for the runs handed meanwhile to end.
REFILL_DELAY, REFILL_MAX_WAIT = 0.5, 3.0
#: Seconds between looks at whether the runs handed last have ended.
_SETTLE_POLL = 0.02
#: Delay before replacing a server that died idle, doubling per death in a row, capped.
RETRY_DELAY, RETRY_MAX = 0.5, 60.0
#: Seconds of idle life after which a death no longer counts as "in a row".
STEADY_AFTER = 10.0
#: Seconds a pool being closed gives its idle servers to leave before SIGKILL.
_CLOSE_WAIT = 2.0
#: Seconds a server set aside is given to get into its run's boundary before it is
#: given back: killed.
_MOVE_WAIT = 10.0
#: Seconds the pool waits for a server just spawned to have joined the waiting room
#: (~1 ms) before it moves the server into a run's boundary.
_JOIN_WAIT = 1.0
#: Longest a warm-up still going on is held (stopped) while runs start, from the last
#: run that started: see :meth:`WarmPool._hold`.
WARM_HOLD_MAX = 2.0
_DONE = threading.Event()
_DONE.set()


def warm_kind(run_dir: Path) -> str | None:
    """The kind of warm server a prepared run can be handed to, or None (cold)."""
    try:
        config = read_experiment(run_dir / EXPERIMENT_DIR)
    except InvalidExperiment:
        return None  # a cold server reports what is wrong with it
    return kind_of(config)


def kind_of(config: dict[str, Any]) -> str | None:
    """The kind of warm server a run of an experiment with this ``experiment.json`` can
    be handed to, or None (cold)."""
    if not isinstance(config, dict):
        return None
    if "nest_session" in config:
        return "nest"
    engines = config.get("engines") or {}
    if not isinstance(engines, dict):
        return None
    types = {e.get("type") if isinstance(e, dict) else None for e in engines.values()}
    if types <= {"python"}:
        return "python"
    return "nest" if types <= {"python", "nest"} else None


def _spawn_waiting(argv: list[str], cwd: Path, env: dict[str, str], stderr: Path,
                   join: Path | None, stdin: int, stdout: int | None) -> subprocess.Popen:
    """A process of the pool in a session of its own, in the cgroup ``join`` names (if
    any), its stderr (and, with no ``stdout``, its stdout) appended to ``stderr``."""
    if join is not None:
        argv = join_argv(join, argv)
    with open(stderr, "ab") as err:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdin=stdin,
                                stdout=err if stdout is None else stdout, stderr=err,
                                start_new_session=True, close_fds=True)


class PoolOps(ProcessOps):
    """The OS seam of the pool: start a warm server, hand it a run, read the host."""

    def spawn_warm(self, argv: list[str], *, cwd: Path, env: dict[str, str], stderr: Path,
                   join: Path | None) -> subprocess.Popen:
        """A warm server, pipes as its stdin and stdout."""
        return _spawn_waiting(argv, cwd, env, stderr, join, subprocess.PIPE, subprocess.PIPE)

    def spawn_fork_server(self, argv: list[str], *, cwd: Path, env: dict[str, str],
                          stderr: Path, join: Path | None,
                          channel: socket.socket) -> subprocess.Popen:
        """A fork server (:mod:`simserver.forks`), ``channel`` as its stdin."""
        return _spawn_waiting(argv, cwd, env, stderr, join, channel.fileno(), None)

    def hand(self, channel: BinaryIO, message: bytes) -> None:
        """Raises: OSError (BrokenPipeError): the process is gone."""
        try:
            channel.write(message)
        finally:
            channel.close()

    def available_mb(self) -> float:
        return psutil.virtual_memory().available / 2**20

    def may_lower(self) -> bool:
        """Whether a server's priority may be lowered: only where it can be raised back."""
        return may_raise_priority()

    def lower_priority(self, pid: int) -> None:
        """Give every thread of ``pid`` a warm-up's priority beside live runs."""
        idle_priority(pid)

    def hold(self, pid: int) -> bool:
        """Stop process ``pid`` where it is (SIGSTOP), unless it is still the shell that
        joins the waiting room: stopped there, it could join after the pool had moved it
        into a run's boundary, and leave it. Returns whether it was stopped."""
        if still_joining(pid):
            return False
        os.kill(pid, signal.SIGSTOP)
        return True

    def go_on(self, pid: int) -> None:
        """Let a process :meth:`hold` stopped go on (SIGCONT)."""
        os.kill(pid, signal.SIGCONT)

    def raise_priority(self, pid: int) -> None:
        """Give every thread of ``pid`` this thread's CPU priority and scheduling policy
        (one :meth:`lower_priority` lowered); nothing where not allowed."""
        give_priority(pid, os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0),
                      os.sched_getparam(0))


class WarmServer:
    """One warm server: idle until handed (``handed``), readiness on ``ready``, and
    ``quiet`` once it has nothing more to do before its run (a fork copies its pages
    after it is ready: see simserver.forks.own_memory)."""

    def __init__(self, kind: str, popen: subprocess.Popen, clock: Any) -> None:
        self.kind = kind
        self.popen = popen
        self.pid = popen.pid
        self.started = clock()
        self.ready = threading.Event()
        self.quiet = threading.Event()
        self.handed = False
        self.lowered = False  # by the pool, to a warm-up's priority (see _lower)
        self.held = False     # stopped by the pool while a run starts (see _hold)
        #: Set once a server set aside for a run is in the run's boundary, or failed to
        #: get there (``move_error``); set already for any other.
        self.moved = _DONE
        self.move_error: BaseException | None = None


class WarmPool(Launcher):
    """A local launcher that hands runs to warm servers when it has one."""

    name = "local"

    def __init__(self, local: LocalLauncher, runs_dir: Path, sizes: dict[str, int],
                 ops: PoolOps | None = None, forks: bool = False) -> None:
        self.local = local
        #: Whether warm servers are forked from a fork server of their kind once it is
        #: warm (see simserver.forks), rather than each started and warmed on its own.
        self.forks = forks
        self.ops = ops or PoolOps()
        self.runs_dir = runs_dir
        self.key = runs_key(runs_dir)
        self.sizes = {kind: max(0, int(sizes.get(kind, 0))) for kind in WARM_KINDS}
        if self.sizes["nest"] and importlib.util.find_spec("nest") is None:
            logger.info("pool: no NEST here; no warm nest servers")
            self.sizes["nest"] = 0
        self._idle: dict[str, list[WarmServer]] = {kind: [] for kind in WARM_KINDS}
        #: Servers set aside for a run being fetched, on their way into its boundary.
        self._reserved: dict[str, WarmServer] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._quiet_until = 0.0          # no refill before (a server died: back off)
        self._handed_at = -REFILL_DELAY  # when the last run was handed
        #: (when, process) of the runs handed in the last REFILL_MAX_WAIT s (see _settling)
        self._recent: list[tuple[float, subprocess.Popen]] = []
        #: Runs of this backend on the host (a warm-up beside them runs at idle priority),
        #: and how many are being spawned or handed right now.
        self._runs: list[ServerHandle] = []
        self._starting = 0
        self._may_lower = self.ops.may_lower()
        #: Runs being launched (set aside or spawned, kernel not built yet), and until
        #: when at most warm-ups still going on are held meanwhile (see _hold).
        self._launching: set[str] = set()
        self._hold_until = 0.0
        self._release_timer: threading.Timer | None = None
        self._deaths = 0
        #: The fork server of each kind (None: none yet, or it died), how many died in a
        #: row, and no new one before when; kinds whose fork server cannot fork.
        self._forkers: dict[str, ForkServer | None] = {kind: None for kind in WARM_KINDS}
        self._forker_deaths = {kind: 0 for kind in WARM_KINDS}
        self._forkers_quiet_until = {kind: 0.0 for kind in WARM_KINDS}
        self._no_forks: set[str] = set()
        self._filler = threading.Thread(target=self._fill, name="pool-fill", daemon=True)
        self._filler.start()

    # -- the Launcher interface ---------------------------------------------------------

    def spawn(self, spec: LaunchSpec, on_exit: ExitCallback) -> ServerHandle:
        with self._cond:
            self._starting += 1  # a warm-up starting meanwhile starts at idle priority
            self._launching.add(spec.sim_id)
        try:
            handle = self._spawn(spec, on_exit)
        finally:
            with self._cond:
                self._starting -= 1
        self._track(handle)
        return handle

    def _spawn(self, spec: LaunchSpec, on_exit: ExitCallback) -> ServerHandle:
        kind = warm_kind(spec.run_dir)
        with self._cond:
            warm = self._reserved.get(spec.sim_id)
        if warm is not None and (warm.kind != kind or warm.popen.poll() is not None or
                                 warm.move_error is not None):
            self._give_back(spec.sim_id, warm)  # the experiment changed since, or it died
            warm = None
        elif warm is not None:
            with self._cond:  # out of the pool for good
                del self._reserved[spec.sim_id]
                self._handed_at = time.monotonic()
                self._cond.notify_all()
        reserved = warm is not None
        if warm is None:
            warm = self._take(kind) if kind else None
        if warm is None:
            return self.local.spawn(spec, on_exit)
        try:
            if not reserved:
                self._claim(warm, spec.sim_id)
            # A reserved server may still be on its way into the boundary: it is handed
            # the run all the same, and runs none of it before it is inside.
            return self._hand(warm, spec, on_exit)
        except (OSError, psutil.Error) as exc:
            logger.warning("pool: warm %s server (pid %d) could not be handed sim %s (%s); "
                           "spawning it cold", kind, warm.pid, spec.sim_id, exc)
            self._kill(warm)
            return self.local.spawn(spec, on_exit)

    def reserve(self, sim_id: str, config: dict[str, Any]) -> None:
        """Set an idle server of the experiment's kind aside for ``sim_id`` and start
        moving it into the run's boundary, while the run's files are fetched: the move
        waits for the kernel (7-13 ms on cgroup v2 without ``favordynmods``), which is
        then off the run's start. Returns at once."""
        kind = kind_of(config)
        warm = self._take(kind, sim_id) if kind else None
        with self._cond:
            self._launching.add(sim_id)
            self._quieten()  # the run starts (warm or cold): the other warm-ups go quiet
        if warm is None:
            return
        logger.info("set aside: a warm %s server (pid %d) for sim %s", kind, warm.pid, sim_id)
        threading.Thread(target=self._move, args=(warm, sim_id), name=f"move-{warm.pid}",
                         daemon=True).start()

    def _move(self, warm: WarmServer, sim_id: str) -> None:
        """Move a server set aside for ``sim_id`` into its boundary. If it cannot be,
        the run is not started outside it: an unhanded server is given back (killed),
        a handed one fails its run by itself (simserver.warm.waiting_to_be_inside)."""
        try:
            self._claim(warm, sim_id)
        except (OSError, psutil.Error) as exc:
            warm.move_error = exc
            logger.warning("pool: warm %s server (pid %d) could not be moved into the "
                           "boundary of sim %s: %s", warm.kind, warm.pid, sim_id, exc)
        finally:
            warm.moved.set()

    def release(self, sim_id: str) -> None:
        with self._cond:
            warm = self._reserved.get(sim_id)  # counted as the pool's until it is back
        if warm is not None:
            self._give_back(sim_id, warm)

    def launched(self, sim_id: str) -> None:
        with self._cond:
            self._launching.discard(sim_id)
            if not self._launching:
                self._go_on_all(self._waiting())

    def adopt(self, sim_id: str, run_dir: Path, on_exit: ExitCallback) -> ServerHandle | None:
        handle = self.local.adopt(sim_id, run_dir, on_exit)
        if handle is not None:
            self._track(handle)
        return handle

    def terminate(self, handle: ServerHandle, grace: float) -> None:
        self.local.terminate(handle, grace)

    def kill_leftovers(self, handle: ServerHandle) -> None:
        self.local.kill_leftovers(handle)

    def clean_orphans(self, runs_dir: Path, owned: dict[str, ServerHandle]) -> None:
        self.local.clean_orphans(runs_dir, owned)

    def facts(self) -> dict[str, Any]:
        return self.local.facts()

    def pool(self) -> dict[str, dict[str, int]]:
        with self._cond:
            return {kind: {"idle": sum(w.ready.is_set() for w in self._idle[kind]),
                           "copying": sum(w.ready.is_set() and not w.quiet.is_set()
                                          for w in self._idle[kind]),
                           "starting": sum(not w.ready.is_set() for w in self._idle[kind]),
                           "size": size, "forking": self._forker_ready(kind)}
                    for kind, size in self.sizes.items()}

    def reserved_memory_mb(self) -> float:
        """What the idle servers hold, and a fork server per kind (reckoned whole: its
        forks share its pages until they write to them)."""
        return sum(WARM_MB[kind] * (size + (1 if self.forks and size else 0))
                   for kind, size in self.sizes.items())

    def problem(self, runs_dir: Path) -> str | None:
        return self.local.problem(runs_dir)

    def close(self) -> None:
        """Let the idle servers go (end of file on their channel), kill the slow."""
        with self._cond:
            self._closed = True
            idle = [w for kind in WARM_KINDS for w in self._idle[kind]]
            idle += self._reserved.values()
            forkers = [f for f in self._forkers.values() if f is not None]
            self._idle = {kind: [] for kind in WARM_KINDS}
            self._reserved = {}
            self._forkers = {kind: None for kind in WARM_KINDS}
            self._go_on_all([*idle, *forkers])  # a held server could not read its end of file
            self._cond.notify_all()
        for forker in forkers:
            forker.close()
        for warm in idle:
            warm.handed = True  # not to be replaced
            try:
                warm.popen.stdin.close()
            except OSError:
                pass
        for warm in [*idle, *forkers]:
            try:
                warm.popen.wait(_CLOSE_WAIT)
            except subprocess.TimeoutExpired:
                self.ops.signal_group(warm.pid, signal.SIGKILL)
                warm.popen.wait()
        self.local.boundary.close_waiting_room()
        self.local.close()

    # -- handing a run ----------------------------------------------------------------------

    def _take(self, kind: str, reserve_for: str | None = None) -> WarmServer | None:
        """An idle server of ``kind``, out of the pool (or, ``reserve_for`` a run, set
        aside for it): a quiet one first, then one ready but still copying its pages (a
        fork), else one still warming up (each ahead of a cold start all the same); None
        if there is none."""
        with self._cond:
            idle = [w for w in self._idle[kind] if w.popen.poll() is None]
            idle.sort(key=lambda w: (not w.ready.is_set(), not w.quiet.is_set()))
            if not idle:
                return None
            warm = idle[0]
            self._idle[kind].remove(warm)
            if reserve_for is not None:
                warm.moved = threading.Event()  # before anyone can see it set aside
                self._reserved[reserve_for] = warm
            warm.handed = True
            self._handed_at = time.monotonic()
            self._cond.notify_all()
            return warm

    def _claim(self, warm: WarmServer, sim_id: str) -> None:
        """Move a server taken out of the pool into the run's boundary (raises if it
        cannot be: see :meth:`spawn` and :meth:`_move` for what becomes of it)."""
        self._raise(warm)  # the rest of its warm-up, if any, is the run's start
        self.local.boundary.prepare(sim_id)
        # A server spawned a moment ago may still be the shell joining the waiting room:
        # moved now, it would join that after, and leave the run's boundary.
        deadline = time.monotonic() + _JOIN_WAIT
        while still_joining(warm.pid) and time.monotonic() < deadline:
            time.sleep(0.0005)
        self.local.boundary.enter(sim_id, warm.pid)

    def _give_back(self, sim_id: str, warm: WarmServer) -> None:
        """Put a server set aside but never handed a run back in the pool (out of the
        run's boundary); kill it if it cannot go back or the pool is full again."""
        try:
            if not warm.moved.wait(_MOVE_WAIT):
                raise OSError(f"not moved in {_MOVE_WAIT:g} s")
            if warm.move_error is not None:
                raise OSError(f"never moved in: {warm.move_error}")
            self.local.boundary.leave(sim_id, warm.pid)
        except OSError as exc:
            logger.warning("pool: warm %s server (pid %d) set aside for sim %s could not go "
                           "back (%s); killing it", warm.kind, warm.pid, sim_id, exc)
            with self._cond:
                self._reserved.pop(sim_id, None)
                self._cond.notify_all()
            self._kill(warm)
            return
        with self._cond:
            self._reserved.pop(sim_id, None)
            self._cond.notify_all()
            if not self._closed and warm.popen.poll() is None and \
                    self._count(warm.kind) < self.sizes[warm.kind]:
                warm.handed = False
                self._idle[warm.kind].append(warm)
                if self._busy():
                    self._lower(warm)
                self._cond.notify_all()
                logger.info("given back: the warm %s server (pid %d) set aside for sim %s",
                            warm.kind, warm.pid, sim_id)
                return
        self._kill(warm)

    def _kill(self, warm: WarmServer) -> None:
        """Kill a server out of the pool that will not be handed a run, and reap it."""
        self.ops.signal_group(warm.pid, signal.SIGKILL)
        try:
            warm.popen.wait(_CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            logger.error("pool: warm %s server (pid %d) survives SIGKILL", warm.kind, warm.pid)

    def _hand(self, warm: WarmServer, spec: LaunchSpec, on_exit: ExitCallback) -> LocalServer:
        env = server_environment(spec.token, extra=self.local.script_env)
        env.pop(TOKEN_ENV)  # the token goes in the handoff; a cold server pops it too
        env[RUN_ENV] = self.local.boundary.marker(spec.sim_id)
        logs = spec.run_dir / LOGS_DIR
        handoff = Handoff(run_dir=str(spec.run_dir), cwd=str(spec.run_dir / EXPERIMENT_DIR),
                          env=env, token=spec.token, stdout=str(logs / STDOUT_LOG),
                          stderr=str(logs / STDERR_LOG), limits=spec.limits)
        ps = psutil.Process(warm.pid)
        handoff.boundary = str(self.local.boundary.prepare(spec.sim_id) or "")
        self._raise(warm)  # done by _claim already, unless that runs on (set aside)
        self.ops.hand(warm.popen.stdin, handoff.to_bytes())
        with self._cond:
            self._recent.append((time.monotonic(), warm.popen))
        logger.info("handed: sim %s (pid %d, a warm %s server)", spec.sim_id, warm.pid,
                    warm.kind)
        return LocalServer(spec.sim_id, ps, warm.popen, on_exit, self.local.boundary)

    # -- keeping the pool full --------------------------------------------------------------

    def _fill(self) -> None:
        while True:
            gap = self._wait_for_gap()
            if gap is None:
                return
            kind, fork_server = gap
            if self.ops.available_mb() < WARM_MB[kind] + MIN_FREE_MB:
                logger.warning("pool: too little memory for a warm %s server; "
                               "trying again in %g s", kind, RETRY_MAX)
                self._pause(RETRY_MAX)
                continue
            if fork_server:
                self._start_fork_server(kind)
                continue
            try:
                warm = self._fork(kind) or self._start(kind)
            except OSError as exc:
                logger.error("pool: a warm %s server could not be started: %s", kind, exc)
                self._pause(RETRY_MAX)
                continue
            with self._cond:
                if self._closed:
                    warm.handed = True
                    self.ops.signal_group(warm.pid, signal.SIGKILL)
                    return
                self._idle[kind].append(warm)
                if self._busy():
                    self._lower(warm)

    def _wait_for_gap(self) -> tuple[str, bool] | None:
        """Block until a kind is short of warm servers and refilling may go on, or,
        with the pool full, a kind is to have a fork server started: ``(kind, whether a
        fork server)``; None once the pool is closed."""
        with self._cond:
            while not self._closed:
                wait = self._quiet_until - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                short = [k for k in WARM_KINDS if self._count(k) < self.sizes[k]]
                if not short:
                    kind, wait = self._fork_server_due()
                    if kind is not None:
                        return kind, True
                    self._cond.wait(wait)
                    continue
                kind = min(short, key=lambda k: self._count(k) / self.sizes[k])
                settle = self._settling()
                if self._idle[kind] and settle > 0:
                    self._cond.wait(settle)
                    continue
                return kind, False
            return None

    def _fork_server_due(self) -> tuple[str | None, float | None]:
        """A kind whose fork server is to be started now, or (None, seconds until one
        may be: None for none) (under ``_cond``)."""
        if not self.forks:
            return None, None
        now, soonest = time.monotonic(), None
        for kind in WARM_KINDS:
            if not self.sizes[kind] or kind in self._no_forks or \
                    self._forkers[kind] is not None:
                continue
            wait = self._forkers_quiet_until[kind] - now
            if wait <= 0:
                return kind, None
            soonest = wait if soonest is None else min(soonest, wait)
        return None, soonest

    def _settling(self) -> float:
        """Seconds before a refill may start while its kind has an idle server: until
        REFILL_DELAY after the last handoff, then (looked at again every _SETTLE_POLL)
        while a run handed in the last REFILL_MAX_WAIT s still runs (under ``_cond``).
        A fork too: it copies its ~140 MB of pages right away (~0.1 s of CPU and the
        memory bandwidth the cores share)."""
        now = time.monotonic()
        settle = self._handed_at + REFILL_DELAY - now
        if settle > 0:
            return settle
        self._recent = [(at, popen) for at, popen in self._recent
                        if now < at + REFILL_MAX_WAIT and popen.poll() is None]
        return _SETTLE_POLL if self._recent else 0.0

    # -- CPU priority of warm-ups ------------------------------------------------------

    def _track(self, handle: ServerHandle) -> None:
        """A run is live: follow it (forgetting those over), quieten the warm-ups."""
        with self._cond:
            self._forget_ended()
            self._runs.append(handle)
            self._quieten()

    def _busy(self) -> bool:
        """Whether a run of this backend is live or starting on the host (under
        ``_cond``)."""
        self._forget_ended()
        return bool(self._runs or self._starting or self._reserved)

    def _forget_ended(self) -> None:
        self._runs = [h for h in self._runs if not h.exited.is_set()]

    def _quieten(self) -> None:
        """A run starts: every warm-up still going on drops to idle priority, and is held
        while runs are being launched (under ``_cond``, as taking a server is: one taken
        for the run is out of ``_idle`` already, and lowered or held no more)."""
        self._hold_until = time.monotonic() + WARM_HOLD_MAX
        for kind in WARM_KINDS:
            for warm in [*self._idle[kind], *filter(None, [self._forkers[kind]])]:
                self._lower(warm)
                self._hold(warm)

    def _waiting(self) -> list[WarmServer | ForkServer]:
        """The servers the pool holds that no run has yet, and the fork servers (under
        ``_cond``)."""
        return [w for kind in WARM_KINDS for w in self._idle[kind]] + \
            list(self._reserved.values()) + [f for f in self._forkers.values() if f]

    def _hold(self, warm: WarmServer) -> None:
        """Stop a warm-up (or a fork's copy of its pages) still going on while runs are
        being launched (set aside or spawned, until :meth:`launched`), for at most
        :data:`WARM_HOLD_MAX` s after the last one began (under ``_cond``). Idle
        priority alone is not enough there: the other core is free, and a warm-up on it
        (importing NEST, exercising it) still slows the run's start through what the
        cores share. The first run after a backend started reached its first step in
        389 ms with the other warm-up held, 463 without, 445 with no pool (12 boots each,
        turn about)."""
        if warm.held or warm.quiet.is_set() or not self._launching or \
                time.monotonic() >= self._hold_until:
            return
        try:
            if not self.ops.hold(warm.pid):
                return
        except OSError:
            return  # gone: its watcher replaces it
        warm.held = True
        logger.info("held: a warm %s server still %s (pid %d), while runs launch", warm.kind,
                    "copying its pages" if warm.ready.is_set() else "warming up", warm.pid)
        if self._release_timer is None:
            self._release_after(WARM_HOLD_MAX)

    def _release_held(self) -> None:
        """Let the held warm-ups go on WARM_HOLD_MAX s after the last run began, if the
        runs' launches have not ended by then."""
        with self._cond:
            self._release_timer = None
            left = self._hold_until - time.monotonic()
            if left > 0 and self._launching and not self._closed:
                self._release_after(left)
                return
            self._go_on_all(self._waiting())

    def _release_after(self, delay: float) -> None:
        """Look again in ``delay`` s whether the held warm-ups may go on (under ``_cond``)."""
        self._release_timer = threading.Timer(delay, self._release_held)
        self._release_timer.daemon = True
        self._release_timer.start()

    def _go_on_all(self, servers: list[WarmServer]) -> None:
        for warm in servers:
            self._go_on(warm)

    def _go_on(self, warm: WarmServer) -> None:
        """Let a held server go on (idempotent)."""
        if warm.held:
            warm.held = False
            try:
                self.ops.go_on(warm.pid)
            except OSError:
                return  # gone
            logger.info("going on: the warm %s server (pid %d)", warm.kind, warm.pid)

    def _lower(self, warm: WarmServer) -> None:
        """Give an idle server still warming up a warm-up's priority (under ``_cond``)."""
        if self._may_lower and not warm.lowered and not warm.ready.is_set():
            warm.lowered = True
            self.ops.lower_priority(warm.pid)

    def _raise(self, warm: WarmServer) -> None:
        """Let a server taken for a run go on, with the backend's priority back, if it
        was held or lowered."""
        self._go_on(warm)
        if warm.lowered:
            warm.lowered = False
            self.ops.raise_priority(warm.pid)

    def _count(self, kind: str) -> int:
        """Servers of ``kind`` the pool holds: idle, or set aside for a run that may
        still give them back (under ``_cond``)."""
        return len(self._idle[kind]) + sum(w.kind == kind for w in self._reserved.values())

    def _pause(self, seconds: float) -> None:
        with self._cond:
            self._quiet_until = max(self._quiet_until, time.monotonic() + seconds)

    def _spawn_args(self, kind: str, *more: str) -> tuple[list[str], dict[str, Any]]:
        """The command line and ``spawn_warm`` keywords of a warm server of ``kind`` (or
        its fork server, with ``--forks``): a run's environment, the waiting room."""
        env = server_environment("", extra=self.local.script_env)
        env.pop(TOKEN_ENV)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        return ([sys.executable, "-m", "simserver", "--warm", kind, "--pool", self.key, *more],
                {"cwd": self.runs_dir, "env": env, "stderr": self.runs_dir.parent / "pool.log",
                 "join": self.local.boundary.waiting_room()})

    def _start(self, kind: str) -> WarmServer:
        argv, spawn = self._spawn_args(kind)
        popen = self.ops.spawn_warm(argv, **spawn)
        logger.info("spawned: a warm %s server (pid %d)", kind, popen.pid)
        warm = WarmServer(kind, popen, time.monotonic)
        threading.Thread(target=self._watch, args=(warm,), name=f"warm-{popen.pid}",
                         daemon=True).start()
        return warm

    # -- fork servers ------------------------------------------------------------------------

    def _forker_ready(self, kind: str) -> bool:
        forker = self._forkers[kind]
        return forker is not None and forker.ready.is_set() and not forker.gone.is_set()

    def _fork(self, kind: str) -> WarmServer | None:
        """A warm server forked from the kind's fork server, ready; None if there is no
        fork server ready, or it failed (the server is then started on its own)."""
        with self._cond:
            forker = self._forkers[kind] if self._forker_ready(kind) else None
        if forker is None:
            return None
        try:
            child = forker.fork()
        except OSError as exc:
            logger.warning("pool: the %s fork server (pid %d) could not fork: %s", kind,
                           forker.pid, exc)
            return None
        warm = WarmServer(kind, child, time.monotonic)
        warm.lowered = forker.lowered  # its priority is its fork server's
        # Warm at once: it copies its pages while it waits (simserver.forks.own_memory).
        said = child.stdout.readline() if select.select([child.stdout], [], [],
                                                         FORK_WAIT)[0] else b""
        if said != WARM_READY:
            logger.warning("pool: a warm %s server forked (pid %d) did not get ready", kind,
                           child.pid)
            self.ops.signal_group(child.pid, signal.SIGKILL)
            child.stdin.close()
            child.stdout.close()
            return None
        warm.ready.set()
        logger.info("forked: a warm %s server (pid %d)", kind, child.pid)
        threading.Thread(target=self._watch, args=(warm,), name=f"warm-{child.pid}",
                         daemon=True).start()
        return warm

    def _start_fork_server(self, kind: str) -> None:
        argv, spawn = self._spawn_args(kind, "--forks")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            popen = self.ops.spawn_fork_server(argv, channel=theirs, **spawn)
        except OSError as exc:
            ours.close()
            logger.error("pool: the %s fork server could not be started: %s", kind, exc)
            with self._cond:
                self._forkers_quiet_until[kind] = time.monotonic() + RETRY_MAX
            return
        finally:
            theirs.close()
        forker = ForkServer(kind, popen, ours)
        with self._cond:
            if self._closed:
                forker.close()
                self.ops.signal_group(forker.pid, signal.SIGKILL)
                return
            self._forkers[kind] = forker
            if self._busy():
                self._lower(forker)
                if self._launching:
                    self._hold(forker)
        logger.info("spawned: the %s fork server (pid %d)", kind, forker.pid)
        threading.Thread(target=self._watch_fork_server, args=(forker,),
                         name=f"forks-{forker.pid}", daemon=True).start()

    def _watch_fork_server(self, forker: ForkServer) -> None:
        """Give a fork server that is warm its priority back (what it forks inherits
        it); forget one that died, and start another after a delay growing with each
        death in a row (never for a kind whose fork server cannot fork)."""
        started = time.monotonic()
        while not forker.ready.wait(0.1):
            if forker.popen.poll() is not None:
                break
        with self._cond:
            if forker.ready.is_set() and self._forkers[forker.kind] is forker:
                self._raise(forker)
                logger.info("warm: the %s fork server (pid %d)", forker.kind, forker.pid)
        code = forker.popen.wait()
        with self._cond:
            if self._closed or self._forkers[forker.kind] is not forker:
                return
            self._forkers[forker.kind] = None
            if code == EXIT_CANNOT_FORK:
                self._no_forks.add(forker.kind)
                delay = None
            else:
                steady = time.monotonic() - started > STEADY_AFTER
                deaths = self._forker_deaths[forker.kind] = \
                    0 if steady else self._forker_deaths[forker.kind] + 1
                delay = min(RETRY_MAX, RETRY_DELAY * 2 ** deaths)
                self._forkers_quiet_until[forker.kind] = time.monotonic() + delay
            self._cond.notify_all()
        if delay is None:
            logger.warning("pool: the %s fork server (pid %d) cannot fork (see pool.log); "
                           "warm %s servers are each started on their own", forker.kind,
                           forker.pid, forker.kind)
        else:
            logger.warning("exited: the %s fork server (pid %d), exit %s; another in %g s",
                           forker.kind, forker.pid, code, delay)

    def _watch(self, warm: WarmServer) -> None:
        """Note when the server is warm; replace it if it dies before it is handed."""
        for line in warm.popen.stdout:  # the end of file: handed (logs took fd 1), or dead
            if line == WARM_READY:
                warm.ready.set()
                warm.quiet.set()
                logger.debug("warm: a %s server (pid %d)", warm.kind, warm.pid)
            elif line == WARM_QUIET:
                warm.quiet.set()
        warm.popen.stdout.close()
        if warm.handed:
            return  # the run's handle reaps it
        code = warm.popen.wait()
        with self._cond:
            if warm.handed or self._closed:
                return
            self._idle[warm.kind].remove(warm)
            steady = time.monotonic() - warm.started > STEADY_AFTER
            if code is not None:  # None: a fork that left with its fork server
                self._deaths = 0 if steady else self._deaths + 1
            delay = min(RETRY_MAX, RETRY_DELAY * 2 ** self._deaths) if self._deaths else 0.0
            self._quiet_until = max(self._quiet_until, time.monotonic() + delay)
            self._cond.notify_all()
        logger.warning("exited: a warm %s server (pid %d) while idle, exit %s; replacing "
                       "it in %g s", warm.kind, warm.pid,
                       "unknown (with its fork server)" if code is None else code, delay)


def is_waiting(pid: int) -> bool:
    """True while the warm server ``pid`` waits for a run: its stdin is still the pool's
    pipe (a handed one has put ``/dev/null`` in its place)."""
    return _stdin_of(pid).startswith("pipe:")


def is_fork_server(pid: int, argv: list[str]) -> bool:
    """True for a fork server of warm servers (its stdin is the pool's socket; what it
    forks has the same command line, and pipes)."""
    return "--forks" in argv and _stdin_of(pid).startswith("socket:")


def _stdin_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/0")
    except OSError:
        return ""


def sweep_waiting(key: str, keep: frozenset[int] = frozenset()) -> int:
    """Kill warm servers of the pool ``key`` that wait for a run, and its fork servers,
    that are not in ``keep``: an earlier backend's, not yet gone. Handed ones are runs:
    left alone."""
    killed = 0
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info.get("cmdline") or []
        if "--warm" not in argv or "--pool" not in argv or key not in argv or \
                proc.pid in keep:
            continue
        if is_waiting(proc.pid):
            what = "a waiting warm server"
        elif is_fork_server(proc.pid, argv):
            what = "a fork server of warm servers"
        else:
            continue
        logger.warning("killing orphan: %s (pid %d)", what, proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        killed += 1
    return killed
