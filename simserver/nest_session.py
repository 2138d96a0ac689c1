"""A NEST session: one interactive NEST kernel that API calls drive and operators pause.

NEST is one kernel per process and not meant to be entered from several threads, so
every kernel call runs on one *kernel thread*: the thread that imported NEST, the
simulation server's main thread. (Not just any thread: NEST's OpenMP settings belong
to the thread that set them, and on a machine with two cores ``ResetKernel`` called
from a second thread hangs for ever.) Request threads hand calls over with
:meth:`NestSession.submit` and wait for the answer; the control API's ``pause``,
``resume``, ``stop`` and ``status`` touch only the session's state, under one
condition lock, and never wait for the kernel.

``Simulate(t)`` runs in steps, ``Prepare``, ``Run(chunk)`` repeatedly, ``Cleanup``,
so a pause or a stop lands between two chunks, and calls that only read or set status
are served there too (``GetKernelStatus`` answers during a long ``Simulate``). Chunks
are whole multiples of NEST's ``min_delay``: NEST then gives exactly the spikes of one
``Simulate(t)``.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from simserver.errors import (
    ExperimentError,
    KernelBusy,
    KernelError,
    SessionClosed,
    SimulationStopped,
)
from simserver.spikes import Spikes, save_spikes, sorted_spikes

logger = logging.getLogger(__name__)

#: Simulated ms per ``Run`` at first; the chunk then adapts to ``wall_budget``.
DEFAULT_CHUNK = 10.0
#: Wall-clock seconds one chunk should take at most, so pause and stop land promptly.
DEFAULT_WALL_BUDGET = 0.2
#: Calls a session serves between two chunks of a ``Simulate``: they read the kernel or
#: set parameters, which NEST allows between ``Run`` calls. Everything else (advancing,
#: resetting, creating, connecting) waits for the ``Simulate`` to end: 409 kernel_busy.
BETWEEN_CHUNKS = frozenset({
    "GetStatus", "SetStatus", "GetKernelStatus", "GetDefaults", "GetConnections",
    "GetNodes", "GetLocalNodeCollection", "GetPosition", "PrintNodes", "get", "set",
})
_RECORDER_LABEL_PREFIX = "simserver-tap-"


class _Job:
    """One call handed to the kernel thread; its waiter gets the result or the exception."""

    def __init__(self, fn: Callable[[], Any], name: str, between_chunks: bool) -> None:
        self.fn = fn
        self.name = name
        self.between_chunks = between_chunks
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - the waiter re-raises it
            self.error = exc
        finally:
            self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()

    def wait(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


class NestSession:
    """Owns the NEST kernel of this process and runs every call to it on one thread.

    ``held=True`` starts the session paused (a simulation server's ``initialized``):
    calls are served, but no ``Simulate`` advances until :meth:`resume`.
    """

    def __init__(self, nest: Any, *, chunk: float = DEFAULT_CHUNK,
                 wall_budget: float | None = DEFAULT_WALL_BUDGET, held: bool = False,
                 allow_exec: bool = True) -> None:
        self.nest = nest
        self.chunk = chunk
        self.wall_budget = wall_budget
        self.allow_exec = allow_exec
        #: ``nest`` as calls and exec'd scripts see it: ``Simulate`` and ``Run`` stepped.
        self.stepped = SteppedNest(self)
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._held = held
        self._stopping = False
        self._closed = False
        self._simulating = False
        #: Set while a chunk (a ``Run``) is in flight: :meth:`settle` waits for it.
        self._in_chunk = False
        self._target: float | None = None
        self._time = float(nest.biological_time)
        self._kernel_thread: int | None = None
        #: Spikes of the last stepped ``Simulate``: NEST's ``local_spike_counter``
        #: counts only the last ``Run``, that is the last chunk. None: NEST's own.
        self.spike_count: int | None = None
        #: What ``GET /`` reports; read here, on the thread that owns NEST.
        self.version: str = nest.build_info["version"]

    # -- the kernel thread -------------------------------------------------------------

    def serve(self) -> None:
        """Run submitted calls on this thread, the one that imported NEST, until
        :meth:`stop`; calls still waiting then fail with ``SessionClosed``.

        Raises:
            SimulationStopped: raised into this thread (SIGTERM in the main thread).
        """
        self._kernel_thread = threading.get_ident()
        try:
            while True:
                with self._cond:
                    while not self._jobs and not self._stopping:
                        self._cond.wait()
                    if self._stopping:
                        return
                    job = self._jobs.popleft()
                self._run(job)
                if isinstance(job.error, SimulationStopped) and not self._stopping:
                    # Raised into a call by a signal, not asked for by stop(): the
                    # process is ending, so the session ends with it.
                    raise job.error
        finally:
            self._close()

    def _run(self, job: _Job) -> None:
        job.run()
        self._time = float(self.nest.biological_time)

    def _close(self) -> None:
        with self._cond:
            self._closed = self._stopping = True
            pending, self._jobs = list(self._jobs), deque()
            self._cond.notify_all()
        for job in pending:
            job.fail(SessionClosed("the NEST session has ended"))

    # -- any thread ----------------------------------------------------------------------

    def submit(self, fn: Callable[[], Any], name: str = "",
               between_chunks: bool | None = None) -> Any:
        """Run ``fn()`` on the kernel thread and return what it returned.

        ``name`` is the PyNEST call it makes. A call that only reads or sets status
        (``between_chunks``; by default, ``name`` is one of :data:`BETWEEN_CHUNKS`) is
        served between two chunks of a running ``Simulate``; any other is refused then.

        Raises:
            KernelBusy: a ``Simulate`` is in progress and ``name`` may not run inside it.
            SessionClosed: the session has ended.
            whatever ``fn`` raised.
        """
        job = _Job(fn, name, name in BETWEEN_CHUNKS if between_chunks is None
                   else between_chunks)
        if threading.get_ident() == self._kernel_thread:
            job.run()  # a call made by a call (an exec'd script): already on the thread
            return job.wait()
        with self._cond:
            if self._stopping:
                raise SessionClosed("the NEST session has ended")
            if self._simulating and not job.between_chunks:
                raise self._busy(name)
            self._jobs.append(job)
            self._cond.notify_all()
        return job.wait()

    def pause(self) -> None:
        """Hold ``Simulate`` before its next chunk (calls are still served)."""
        with self._cond:
            self._held = True
            self._cond.notify_all()

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the chunk in flight, if any, to end (a chunk is
        not interrupted); return whether none is in flight. After :meth:`pause`, the
        biological time then stays where it is until :meth:`resume`."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._in_chunk, timeout)

    def resume(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def stop(self) -> None:
        """End the session: a running ``Simulate`` raises ``SimulationStopped`` after
        its current chunk, and :meth:`serve` returns."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def status(self) -> dict[str, Any]:
        """Biological time (as of the last chunk) and what the kernel is doing."""
        with self._cond:
            return {"biological_time": self._time, "simulating": self._simulating,
                    "simulate_until": self._target, "paused": self._held,
                    "stopping": self._stopping}

    def _busy(self, name: str) -> KernelBusy:
        return KernelBusy(f"NEST is simulating (t = {self._time:g} ms of {self._target:g} ms"
                          f"{', paused' if self._held else ''}); {name or 'this call'} can "
                          "run once the Simulate has ended")

    # -- stepped simulation (kernel thread only) -----------------------------------------

    def simulate(self, t: Any) -> None:
        """``nest.Simulate(t)`` in chunks, honouring pause and stop between them.

        Raises:
            NESTError (BadParameter), TypeError: NEST's own refusal of ``t``, raised
                before the kernel changes (``nest.Simulate`` would leave it prepared).
            KernelBusy: called from within a running ``Simulate``.
            SimulationStopped: the session was stopped; the kernel is cleaned up and
                keeps what was simulated up to the last chunk.
        """
        steps = self._steps_of(t)
        nest = self.nest
        with self._cond:
            if self._simulating:
                raise self._busy("Simulate")
            self._simulating = True
            self._target = self._time + float(t)
        verbosity = nest.verbosity
        # NEST's INFO messages come four per Run: once per chunk would flood the logs.
        nest.verbosity = max(verbosity, nest.VerbosityLevel.WARNING)
        try:
            nest.Prepare()
            try:
                self._run_chunks(steps)
            finally:
                nest.Cleanup()
        finally:
            nest.verbosity = verbosity
            with self._cond:
                self._simulating, self._target = False, None
                self._time = float(nest.biological_time)

    def run(self, t: Any) -> None:
        """``nest.Run(t)`` (inside the caller's own ``Prepare``/``Cleanup``), after a pause.

        Raises:
            SimulationStopped: the session was stopped while held.
        """
        with self._chunk():
            self.spike_count = None
            self.nest.Run(t)
            self._time = float(self.nest.biological_time)

    def _steps_of(self, t: Any) -> int:
        """``t`` in resolution steps, refused as NEST refuses it.

        Raises:
            TypeError: not a number.
            NESTError (BadParameter): negative, or not a multiple of the resolution.
        """
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise TypeError(f"must be real number, not {type(t).__name__}")
        errors = self.nest.NESTErrors
        if t < 0:
            raise errors.BadParameter("The simulation time cannot be negative.")
        steps = t / self.nest.resolution
        if not math.isfinite(steps) or abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
            raise errors.BadParameter(
                "The simulation time must be a multiple of the simulation resolution.")
        return round(steps)

    def _run_chunks(self, steps: int) -> None:
        nest = self.nest
        resolution = nest.resolution
        per_delay = max(1, round(nest.min_delay / resolution))
        delays = max(1, round(self.chunk / resolution / per_delay))
        done = 0
        self.spike_count = 0
        while done < steps:
            with self._chunk():
                chunk = min(delays * per_delay, steps - done)
                began = time.monotonic()
                nest.Run(chunk * resolution)
                done += chunk
                self._time = float(nest.biological_time)
            self.spike_count += nest.local_spike_counter
            delays = self._adapt(delays, time.monotonic() - began)

    def _adapt(self, delays: int, took: float) -> int:
        """Grow a chunk that ran well inside the wall budget, shrink one that overran."""
        budget = self.wall_budget
        if not budget:
            return delays
        if took > budget and delays > 1:
            return max(1, delays // 2)
        if took < budget / 4:
            return delays * 2
        return delays

    @contextmanager
    def _chunk(self) -> Iterator[None]:
        """One chunk (a ``Run``) in flight: entered once :meth:`_between_chunks` lets
        it, left with the chunk ended, which :meth:`settle` waits for."""
        self._between_chunks()
        try:
            yield
        finally:
            with self._cond:
                self._in_chunk = False
                self._cond.notify_all()

    def _between_chunks(self) -> None:
        """Serve the calls waiting, block while held; raise if stopped. Returns with
        a chunk in flight (``_in_chunk``): see :meth:`_chunk`.

        Raises:
            SimulationStopped: the session is stopping.
        """
        while True:
            with self._cond:
                if self._stopping:
                    raise SimulationStopped(f"the NEST session was stopped at t = "
                                            f"{self._time:g} ms")
                job = self._jobs.popleft() if self._jobs else None
                if job is None:
                    if not self._held:
                        self._in_chunk = True
                        return
                    self._cond.wait()
                    continue
            if job.between_chunks:
                job.run()
            else:  # queued before this Simulate began
                job.fail(self._busy(job.name))

    # -- the end (kernel thread) --------------------------------------------------------

    def save_spikes(self, results_dir: Path) -> Path | None:
        """Write every in-memory spike recorder's events to ``spikes.npz``.

        Each recorder is saved under its label, or ``spike_recorder_<id>`` without one.
        Returns the file, or None when the session has no such recorder.
        """
        spikes = self.recorded_spikes()
        if not spikes:
            logger.info("nest session: no spike recorder, no spikes saved")
            return None
        path = save_spikes(spikes, results_dir)
        logger.info("saved: %s (%s) up to t = %g ms", path.name, ", ".join(
            f"{name} {len(times)} spikes" for name, (times, _) in spikes.items()),
            self.nest.biological_time)
        return path

    def recorded_spikes(self) -> dict[str, Spikes]:
        found: dict[str, Spikes] = {}
        for recorder in self.nest.GetNodes({"model": "spike_recorder"}):
            status = recorder.get(["label", "record_to", "global_id"])
            label, node_id = status["label"], status["global_id"]
            if status["record_to"] != "memory" or label.startswith(_RECORDER_LABEL_PREFIX):
                continue
            name = label if label.isidentifier() else f"spike_recorder_{node_id}"
            found[name if name not in found else f"{name}_{node_id}"] = \
                sorted_spikes([recorder.get("events")])
        return found


class SteppedNest:
    """PyNEST as a session's calls see it: ``Simulate`` and ``Run`` go through the session
    (pause, stop, chunks); every other name is the ``nest`` module's own."""

    def __init__(self, session: NestSession) -> None:
        object.__setattr__(self, "_session", session)

    def __getattr__(self, name: str) -> Any:
        if name == "Simulate":
            return self._session.simulate
        if name == "Run":
            return self._session.run
        if name == "local_spike_counter" and self._session.spike_count is not None:
            return self._session.spike_count
        return getattr(self._session.nest, name)

    def ResetKernel(self) -> None:
        self._session.spike_count = None
        self._session.nest.ResetKernel()

    def GetKernelStatus(self, keys: Any = None) -> Any:
        """NEST's, with ``local_spike_counter`` counting the whole last ``Simulate``."""
        status = self._session.nest.GetKernelStatus(keys)
        count = self._session.spike_count
        if count is None:
            return status
        if isinstance(status, dict) and "local_spike_counter" in status:
            return {**status, "local_spike_counter": count}
        if keys == "local_spike_counter":
            return count
        if isinstance(keys, (list, tuple)) and "local_spike_counter" in keys:
            return tuple(count if key == "local_spike_counter" else value
                         for key, value in zip(keys, status, strict=True))
        return status

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._session.nest, name, value)  # nest.resolution = 0.2, ...

    def __dir__(self) -> list[str]:
        return dir(self._session.nest)

    def __repr__(self) -> str:
        return f"<nest {self._session.nest.__version__} in a NEST session>"


def nest_error_message(exc: BaseException) -> str:
    """NEST's own message of a NEST error; some (``KernelException``) carry none."""
    return str(exc).strip() or f"NEST raised {type(exc).__name__}"


def open_session(spec: Any, *, held: bool = True) -> NestSession:
    """The NEST session an experiment's ``"nest_session"`` entry asks for, at t = 0::

        "nest_session": {"seed": 12345, "threads": 1, "resolution": 0.1,
                         "chunk": 10.0, "wall_budget": 0.2, "exec": true}

    Every key is optional. Call it on the thread that will serve the session.

    Raises:
        ExperimentError: the entry is not an object, or a value is not a positive number.
        KernelError: NEST cannot be imported or refuses the kernel settings.
    """
    from simserver.nest_engine import import_nest

    if not isinstance(spec, dict):
        raise ExperimentError("'nest_session' must be an object such as {\"seed\": 1}")
    kernel = {name: _positive(spec, key, int if key != "resolution" else float)
              for key, name in (("seed", "rng_seed"), ("threads", "local_num_threads"),
                                ("resolution", "resolution")) if spec.get(key) is not None}
    chunk = _positive(spec, "chunk", float) if "chunk" in spec else DEFAULT_CHUNK
    budget = _positive(spec, "wall_budget", float) if spec.get("wall_budget") is not None \
        else DEFAULT_WALL_BUDGET
    try:
        nest = import_nest()
        nest.ResetKernel()
        nest.verbosity = nest.VerbosityLevel.WARNING
        nest.set(**kernel)
    except Exception as exc:  # ImportError, OSError of NEST's libraries, a NESTError
        raise KernelError(f"NEST session: {type(exc).__name__}: {exc}") from exc
    logger.info("nest session: NEST %s, kernel %s, chunks of %g ms", nest.__version__,
                kernel, chunk)
    return NestSession(nest, chunk=chunk, wall_budget=budget, held=held,
                       allow_exec=spec.get("exec", True) is not False)


def _positive(spec: dict[str, Any], key: str, kind: type) -> Any:
    value = spec[key]
    accepted = (int, float) if kind is float else int
    if isinstance(value, bool) or not isinstance(value, accepted) \
            or not math.isfinite(value) or value <= 0:
        raise ExperimentError(f"nest_session: {key!r} must be a positive {kind.__name__}, "
                              f"not {value!r}")
    return kind(value)
