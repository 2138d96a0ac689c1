"""A warm simulation server: ``python -m simserver --warm KIND --pool KEY``.

The backend's pool starts these ahead of demand, in a session of their own. Each
imports what a run will need (the simulation server, NumPy; for ``nest`` also NEST,
exercised once on a throwaway network and reset, and matplotlib), says so on its
stdout, and blocks reading its stdin, a pipe whose other end only the pool holds. The
pool writes one :class:`~lifecycle.messages.Handoff` and closes the pipe; the process
reads to end of file, puts ``/dev/null`` in the pipe's place, takes on the run (its
logs as stdout and stderr, working directory, environment) and runs it exactly as
``python -m simserver --run-dir`` would, then exits. There is no way back to waiting:
a process serves at most one run, so no kernel state or user code outlives it. End of
file with nothing read means the backend closed the pool or died: the process leaves.
One the pool holds stopped while a run starts cannot read that end of file: until it is
handed a run, the kernel kills it when the backend dies (:func:`die_with_parent`).
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from lifecycle.messages import WARM_READY, Handoff
from simserver.errors import SimServerError

#: ``os.open`` flags and mode of a run's log, as the cold launcher opens it ("ab").
_LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT
_LOG_MODE = 0o666


def warm_up(kind: str, handed: Callable[[], bool] = lambda: False) -> list[str]:
    """Import what a run of ``kind`` needs, so it need not when handed one; return the
    steps skipped.

    Exercising NEST and importing matplotlib only make a later run faster, and take
    ~0.25 s: once ``handed()`` says a run is waiting (the pool hands a server still
    warming up when it has no ready one), they are skipped, and the run starts as soon
    as what it needs is imported: as a cold start would, from further along.
    """
    import numpy  # noqa: F401
    import simserver.server  # noqa: F401 - the control API, run loop, kernel, engines

    if kind != "nest":
        return []
    from simserver.nest_engine import import_nest

    try:
        nest = import_nest()
    except Exception as exc:  # noqa: BLE001 - the run reports it, as a cold one would
        print(f"simserver: NEST is not usable: {exc}", file=sys.stderr, flush=True)
        return []
    skipped = []
    for step in (exercise_nest, import_matplotlib):
        if skipped or handed():
            skipped.append(step.__name__)
            continue
        try:
            step(nest)
        except Exception as exc:  # noqa: BLE001 - the run reports it, as a cold one would
            print(f"simserver: {step.__name__}: {exc}", file=sys.stderr, flush=True)
    return skipped


def import_matplotlib(nest: Any) -> None:
    """The raster is drawn after the run's end; it need not import matplotlib then."""
    try:
        from matplotlib.backends import backend_agg  # noqa: F401
        from matplotlib import figure  # noqa: F401
    except ImportError:
        pass


def readable(fd: int = 0) -> bool:
    """Whether ``fd`` can be read without blocking: on the channel, a run is waiting
    (or the pool closed it)."""
    return bool(select.select([fd], [], [], 0)[0])


def exercise_nest(nest: Any) -> None:
    """Build and simulate a throwaway network once, then reset the kernel.

    A fresh NEST pays first-use costs on its first build (its allocators fault their
    memory in): ~10 ms of a 1000-neuron network. Paid here, they leave the run's start.
    ``ResetKernel`` leaves nothing of it behind, and the engine resets again anyway.
    """
    nest.ResetKernel()
    nest.verbosity = nest.VerbosityLevel.ERROR
    neurons = nest.Create("iaf_psc_delta", 1000)
    noise = nest.Create("poisson_generator", params={"rate": 1000.0})
    recorder = nest.Create("spike_recorder")
    nest.Connect(neurons, neurons, {"rule": "fixed_indegree", "indegree": 100},
                 {"weight": 0.1, "delay": 1.5})
    nest.Connect(noise, neurons)
    nest.Connect(neurons, recorder)
    nest.Simulate(2.0)
    recorder.get("events")
    nest.ResetKernel()


def put_warm_up_out_of_collections(collect: bool) -> None:
    """Leave what the warm-up made (modules, NEST, matplotlib: ~75,000 objects the
    garbage collector tracks, all living as long as the process) out of every later
    collection (``gc.freeze``), after freeing its garbage when ``collect`` (~30 ms, while
    no run waits).

    Otherwise the run's collections go through all of them: a generation-1 one fell in
    the run's start, 1.2-2.4 ms of a warm start's ~11 ms; a full one takes 27-30 ms.
    """
    if collect:
        gc.collect()
    gc.freeze()


def read_handoff(fd: int = 0) -> Handoff | None:
    """Read the channel to end of file, then close it for good; None if it was
    closed without a run.

    Raises:
        ValueError: what was written is not a handoff.
    """
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, fd)  # the pipe is gone: nothing can hand this process a second run
    os.close(null)
    data = b"".join(chunks)
    return Handoff.from_bytes(data) if data else None


def take_over(handoff: Handoff) -> None:
    """Become the process a cold launch of the run would have started."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    for fd, path in ((1, handoff.stdout), (2, handoff.stderr)):
        log = os.open(path, _LOG_FLAGS, _LOG_MODE)
        os.dup2(log, fd)
        os.close(log)
    os.chdir(handoff.cwd)
    # A shell that started this process (to join a cgroup) exported PWD: it would have
    # started a cold server the same way, in the run's folder.
    shell_started = "PWD" in os.environ
    # Children the script starts inherit this (the run's marker among it).
    os.environ.clear()
    os.environ.update(handoff.env)
    if shell_started:
        os.environ["PWD"] = handoff.cwd
    sys.path[0] = handoff.cwd  # what ``python -m`` started in ``cwd`` puts first
    sys.argv[1:] = ["--run-dir", handoff.run_dir]


#: Seconds a handed server waits to be moved into its run's cgroup before it fails.
BOUNDARY_WAIT = 10.0


def waiting_to_be_inside(procs: str) -> Callable[[], None]:
    """What the server calls before any code of the run: returns once this process is
    listed in ``procs`` (nothing to wait for when it is "").

    Raises (when called):
        SimServerError: it was not moved in within :data:`BOUNDARY_WAIT` seconds.
    """
    def inside() -> None:
        if not procs:
            return
        pid, deadline = str(os.getpid()), time.monotonic() + BOUNDARY_WAIT
        while pid not in Path(procs).read_text().split():
            if time.monotonic() > deadline:
                raise SimServerError(f"the simulation server was not moved into {procs}")
            time.sleep(0.0005)
    return inside


#: How much lower the CPU priority of a warm-up beside live runs is than the backend's
#: (nice).
WARM_UP_NICE = 10
#: The scheduling policy of a warm-up beside live runs, beside its nice value: it runs
#: only on a CPU nothing else wants, and a CPU running only such work counts as idle
#: when a run's process wakes up. Nice alone left a warm-up ~0.6 of a core beside a run
#: starting on the other (two cores): the first run after a backend started, handed a
#: server still warming up, took 785 ms to its first step against 599 ms without a
#: pool; 622 with it.
_IDLE = getattr(os, "SCHED_IDLE", None)


def give_priority(pid: int, nice: int, policy: int, param: Any) -> None:
    """Give every thread of process ``pid`` this nice value and scheduling policy, each
    where allowed (one not allowed does not keep the other; a thread gone is passed)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return  # the process is gone
    for task in tasks:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(int(task), policy, param)
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, int(task), nice)


def idle_priority(pid: int) -> None:
    """Give every thread of process ``pid`` a warm-up's priority beside live runs: nice
    :data:`WARM_UP_NICE` above the calling thread's, and ``SCHED_IDLE`` where there is
    one. Threads it starts later inherit it."""
    give_priority(pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + WARM_UP_NICE),
                  os.SCHED_OTHER if _IDLE is None else _IDLE, os.sched_param(0))


def lower_priority() -> None:
    """Lower the calling thread's CPU priority for good (no privilege needed): for work
    after a run's end, such as drawing its plots, that must not slow the next run."""
    os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0)
                                           + WARM_UP_NICE))


def may_raise_priority() -> bool:
    """Whether this process may give a thread its priority back after
    :func:`idle_priority` (root with CAP_SYS_NICE, or RLIMIT_NICE allows it): tried on a
    thread of its own (Linux priorities are per thread)."""
    original = os.getpriority(os.PRIO_PROCESS, 0)
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    worked: list[bool] = []

    def probe() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, min(19, original + 1))
            os.setpriority(os.PRIO_PROCESS, 0, original)
            if _IDLE is not None:
                os.sched_setscheduler(0, _IDLE, os.sched_param(0))
                os.sched_setscheduler(0, policy, param)
            worked.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, name="priority-probe")
    thread.start()
    thread.join()
    return bool(worked)


#: ``prctl`` option: the signal this process gets when its parent thread exits.
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int) -> bool:
    """Have the kernel send ``sig`` to this process when the thread that started it
    exits (Linux's parent-death signal; 0: no more); whether it could. A stopped process
    gets a SIGKILL all the same, which is what the pool needs: it holds warm-ups stopped
    while runs start, and a backend killed meanwhile would leave them stopped. The
    pool's filling thread starts them and lives as long as the backend; a run's server
    clears it, as it outlives its backend to be adopted. Not inherited by children."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def wait_for_run(kind: str) -> int:
    """Warm up, wait for the run, run it; the exit code. The pool sets the warm-up's CPU
    priority from outside (``backend.launchers.pool``): the backend's while the host has
    no run of its own, a warm-up's (:func:`idle_priority`) from the moment one starts,
    and the backend's again when it hands this server a run."""
    # Before the warm-up, which the pool may hold: if the backend died before this, the
    # pipe's end of file tells it (nobody is left to stop it).
    die_with_parent(signal.SIGKILL)
    skipped = warm_up(kind, readable)
    if skipped:
        print(f"simserver: its channel was written to while it warmed up (a run, or the "
              f"pool's end); skipped {', '.join(skipped)}", file=sys.stderr, flush=True)
    put_warm_up_out_of_collections(collect=not readable())
    return serve_one_run()


def serve_one_run(meanwhile: Callable[[], object] | None = None) -> int:
    """The rest of a warm server's life, warm: say so, wait for the run, run it; the exit
    code (also of a server a fork server forked: :mod:`simserver.forks`). ``meanwhile``
    is work to do once warm, while no run has come (it looks at the channel itself, see
    :func:`readable`, and stops when one does)."""
    os.write(1, WARM_READY)
    if meanwhile is not None:
        meanwhile()
    try:
        handoff = read_handoff()
    except ValueError as exc:
        print(f"simserver: {exc}", file=sys.stderr, flush=True)
        return 2
    if handoff is None:
        return 0
    die_with_parent(0)  # a run's server outlives its backend, to be adopted
    take_over(handoff)
    from simserver.server import main

    return main(Path(handoff.run_dir).resolve(), handoff.token,
                waiting_to_be_inside(handoff.boundary))
