"""The simulation server process: owns the kernel, obeys the control API.

Started by the backend as ``python -m simserver --run-dir DIR`` with the control
token in the environment, in its own session, with the experiment folder as its
working directory and its stdout/stderr going to the run's logs.
"""
from __future__ import annotations

import gc
import hmac
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import CodeType
from typing import TYPE_CHECKING, Any, Callable

import psutil

from lifecycle import (
    TERMINAL_STATES, InvalidTransition, SimState, SimulationServerLifecycle, experiment,
)
from lifecycle.errors import InvalidExperiment
from lifecycle.experiment import optional_positive, read_experiment
from lifecycle.live import LiveStatusWriter
from lifecycle.messages import (
    COMMAND_TARGETS, EXIT_FAILED, EXIT_OK, EXIT_USAGE, EXPERIMENT_DIR, LOGS_DIR, NODE_HOST,
    RESULTS_DIR, RUN_CONFIG_FILE, SERVER_FILE, SIMULATION_LOG, STATUS_FILE, RunConfig, ServerInfo,
    read_json, token_digest,
)
from simserver import script
from simserver.control import ControlServer
from simserver.errors import ExperimentError, SimServerError, SimulationStopped
from simserver.events import EventLog
from simserver.kernel import Kernel, build_kernel
from simserver.runloop import RunLoop, Simulation
from simserver.runner import ScriptError, compile_script, run_script
from simserver.warm import lower_priority
from storage.atomic import write_json_atomic

if TYPE_CHECKING:
    from simserver.nest_session import NestSession

logger = logging.getLogger(__name__)

# How often status.json is refreshed while the kernel advances.
_STATUS_INTERVAL = 1.0
#: The most a pause waits for the step or chunk in flight to end before it answers
#: (the backend waits 5 s for the answer). The run loop's chunks take ~5 ms, a NEST
#: session's at most ~0.2 s; only a script's own long step takes longer.
PAUSE_SETTLE_SECONDS = 2.0


class SimulationServer:
    """One simulation: its lifecycle, kernel, run loop and control API."""

    def __init__(self, run_dir: Path, token: str,
                 inside: Callable[[], None] = lambda: None) -> None:
        self.run_dir = run_dir
        self.token = token
        #: Returns once this process is inside its run's boundary (a warm server is
        #: moved into it while it starts); no code of the run runs before.
        self.inside = inside
        self.config = RunConfig.from_dict(read_json(run_dir / RUN_CONFIG_FILE) or {})
        self.experiment_dir = run_dir / EXPERIMENT_DIR
        self.results_dir = run_dir / RESULTS_DIR
        self.events = EventLog()
        self.kernel: Kernel | None = None
        self.loop: RunLoop | None = None
        #: Set when the experiment is a NEST session (``"nest_session"``) and no script.
        self.nest_session: NestSession | None = None
        self.error: dict[str, Any] | None = None
        self.experiment: dict[str, Any] = {}
        #: CPU seconds this process (and its children) had used when it took the run: a
        #: warm server's warm-up is not the run's.
        self._cpu_before = _usage()[0]
        self._go = threading.Event()
        self._started = False
        #: Set when the script (or session) runs: the status is then written every
        #: _STATUS_INTERVAL by a thread started with the server, not on the way to the
        #: first step (starting a thread there took 2-3 ms on a busy 2-core machine).
        self._running = threading.Event()
        #: Set to have that thread write the status now (see _fire_initialize).
        self._status_due = threading.Event()
        self._results_saved = False
        self.exit_code: int | None = None
        self._status_lock = threading.Lock()
        #: Set while two state changes are to leave one ``status.json`` write.
        self._status_deferred = False
        #: Control requests in flight (see attend).
        self._attending = 0
        self._attend_lock = threading.Lock()
        #: The step count, state and running time in shared memory (``live.bin``),
        #: for status reads on this host that need not wait for the control API.
        self.live: LiveStatusWriter | None = None
        self.lifecycle = SimulationServerLifecycle(self.config.sim_id, listener=self)

    # -- lifecycle listener and control API ------------------------------------

    def state_changed(self, state: SimState, trigger: str, details: dict[str, Any]) -> None:
        if self.nest_session is not None:
            _drive_session(self.nest_session, state)
        if self.loop is not None:
            if state == SimState.PAUSED:
                self.loop.hold()
            elif state == SimState.STOPPED:
                self.loop.request_stop()
        if state != SimState.INITIALIZED:
            self._go.set()
        if state == SimState.FAILED:
            self.error = details.get("error")
        if self.live is not None:
            self.live.update(state=state)
        logger.info("state: %s (%s)", state.value, trigger)
        self.events.append("state", state=state.value, trigger=trigger, error=self.error)
        if self.loop is not None and state == SimState.STARTED:
            self.loop.release()  # after the event: its first step's event comes after it
        if not self._status_deferred:
            self.write_status()

    def attend(self, change: int) -> None:
        """A control request began (+1) or ended (-1): see :attr:`RunLoop.attending`
        (``0`` hands a new loop the count)."""
        with self._attend_lock:
            self._attending += change
            if self.loop is not None:
                self.loop.attending = self._attending > 0

    def command(self, name: object) -> dict[str, Any]:
        """Obey a control command.

        Raises:
            ValueError: unknown command.
            InvalidTransition: the lifecycle refuses it.
        """
        target = COMMAND_TARGETS.get(name) if isinstance(name, str) else None
        if target is None:
            raise ValueError(f"unknown command {name!r}; commands: {', '.join(COMMAND_TARGETS)}")
        if target == SimState.STARTED and self.lifecycle.state == SimState.CREATED:
            raise InvalidTransition(SimState.CREATED, target, "still initializing")
        with self.lifecycle.lock:
            if target == SimState.PAUSED and self.lifecycle.plan(target):
                self._hold_kernel()
            state = self.lifecycle.request(target)
            # The event of this change is numbered already: a follower can tell
            # older events from this reply.
            return {"state": state.value, "seq": self.events.last_seq}

    def _hold_kernel(self) -> None:
        """Hold the run loop or the NEST session before the lifecycle says ``paused``,
        and let the step or chunk in flight end: a status that says ``paused`` then
        reports the simulated time the pause holds, never one that is still to move.
        A step that outlasts :data:`PAUSE_SETTLE_SECONDS` (the script's own) is not
        waited for to the end: the answer is due."""
        if self.loop is not None:
            self.loop.hold()
            settled = self.loop.settle(PAUSE_SETTLE_SECONDS)
        elif self.nest_session is not None:
            self.nest_session.pause()
            settled = self.nest_session.settle(PAUSE_SETTLE_SECONDS)
        else:
            return
        if not settled:
            logger.warning("pause: the step in flight is still running after %g s; it "
                           "ends before the pause holds", PAUSE_SETTLE_SECONDS)

    def status(self) -> dict[str, Any]:
        kernel, loop, session = self.kernel, self.loop, self.nest_session
        nest = session.status() if session is not None else None
        return {
            "state": self.lifecycle.state.value,
            "sim_time": kernel.time if kernel else nest["biological_time"] if nest else 0.0,
            "steps": kernel.steps if kernel else 0,
            "timestep": kernel.timestep if kernel else None,
            "real_time": loop.real_time() if loop else 0.0,
            "timeout": {"sim_time": loop.sim_timeout, "real_time": loop.real_timeout}
            if loop else {},
            "error": self.error,
            "exit_code": self.exit_code,
            "usage": self.usage(),
            **({"nest_session": nest} if nest else {}),
            "pid": os.getpid(),
            "updated_at": time.time(),
        }

    def usage(self) -> dict[str, Any]:
        """What the run has used so far: CPU seconds (user + system, of this process and
        of the children it waited for) since it took the run, and the peak resident
        memory of the process or of its largest child."""
        cpu, peak = _usage()
        return {"cpu_seconds": round(cpu - self._cpu_before, 3), "max_rss_bytes": peak}

    def write_status(self) -> None:
        with self._status_lock:
            write_json_atomic(self.run_dir / STATUS_FILE, self.status())

    # -- the main thread -------------------------------------------------------

    def run(self) -> int:
        """Serve, initialize, wait for start, run the script; return the exit code."""
        host = bind_address(self.config.host)
        self.live = _live_status_writer(self.run_dir)
        control = ControlServer(host, self.token, self)
        control.serve_in_thread()
        threading.Thread(target=self._refresh_status, name="status", daemon=True).start()
        info = ServerInfo(pid=os.getpid(), create_time=psutil.Process().create_time(),
                          host=host, port=control.port, token=self.token)
        # Not synced: it describes this process, which a crash of the machine ends.
        write_json_atomic(self.run_dir / SERVER_FILE, info.to_dict(), mode=0o600,
                          durable=False)
        logger.info("listening: %s", info.url)
        try:
            try:
                code = self._initialize()
                # What exists now (modules, engines, the network) lasts as long as the run:
                # out of the script's garbage collections, each of which would otherwise go
                # through it all (~30 ms for a full one with NEST loaded).
                gc.freeze()
                if self.nest_session is not None:
                    # Served from initialized on, so a network can be built before start;
                    # the session is held (no Simulate advances) until then.
                    if not self.lifecycle.is_terminal:
                        self._serve_session(self.nest_session)
                else:
                    self._go.wait()
                    # Started, or paused already (a pause may land before this thread
                    # wakes): either way the script runs; run_loop holds it while paused.
                    if not self.lifecycle.is_terminal:
                        self._execute(code)
            finally:
                # From here on results are being saved: a SIGTERM now would cut a file
                # in half, so it no longer interrupts (the backend's SIGKILL bounds the
                # wait). Masking would not do: the kernel delivers the signal to any
                # thread that does not block it, and Python runs the handler here.
                signal.signal(signal.SIGTERM, _finish_first)
        except SimulationStopped:
            self._end_as(SimState.STOPPED)
        except InvalidExperiment as exc:
            self._fail(ExperimentError(str(exc)))
        except (SimServerError, ScriptError) as exc:
            self._fail(exc)
        except Exception as exc:  # a bug here, or a broken engine: fail, say why
            logger.exception("the simulation server failed")
            self._fail(SimServerError(f"{type(exc).__name__}: {exc}"))
        finally:
            self._finish()
        return self.exit_code

    def _initialize(self) -> CodeType | None:
        """Read the experiment, compile the script, build the kernel at t = 0 (or open
        the NEST session, held until start)."""
        self.inside()
        self.experiment = read_experiment(self.experiment_dir)
        if "nest_session" in self.experiment:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            # Imported here: it brings numpy and NEST, which script runs may not need.
            from simserver.nest_session import open_session

            self.nest_session = open_session(self.experiment["nest_session"], held=True)
            self._fire_initialize()
            return None
        main_script = self.config.main_script or self.experiment.get("main_script")
        code = compile_script(self.experiment_dir, main_script)
        params = {**self.experiment.get("params", {}), **self.config.params}
        self.kernel = build_kernel(self.experiment, self.experiment_dir, params)
        timeout = {**experiment.timeout(self.experiment), **self.config.timeout}
        self.loop = RunLoop(self.kernel,
                            sim_timeout=optional_positive(timeout, "sim_time", "timeout.sim_time"),
                            real_timeout=optional_positive(timeout, "real_time",
                                                           "timeout.real_time"),
                            real_time_factor=optional_positive(self.experiment,
                                                               "real_time_factor",
                                                               "real_time_factor"),
                            live=self.live, moving=self._moving)
        self.attend(0)
        if self.live is not None:
            self.live.update(ready=True)  # its state follows from state_changed
        self.results_dir.mkdir(parents=True, exist_ok=True)
        script.sim = Simulation(self.loop, params, self.results_dir)
        self.main_script = main_script
        self._fire_initialize()
        return code

    def _moving(self) -> None:
        """The first step since a start or resume is done: an event, so that the backend
        can tell the run's followers at once (its status ticks come every second)."""
        self.events.append("moving", sim_time=self.kernel.time, steps=self.kernel.steps)

    def _fire_initialize(self) -> None:
        with self.lifecycle.lock:  # a stop may arrive meanwhile
            if self.lifecycle.state == SimState.CREATED:
                if not self.config.start:
                    self.lifecycle.fire("initialize")
                    return
                # The backend wants it running: started without a round trip, and
                # status.json written (synced) once, where the two changes end, by the
                # status thread: the fsync (~1 ms) is not on the way to the first step.
                # The backend hears of both changes from the control API's events.
                self._status_deferred = True
                try:
                    self.lifecycle.fire("initialize")
                    self.lifecycle.request(SimState.STARTED)
                finally:
                    self._status_deferred = False
                    self._status_due.set()
            elif self.lifecycle.state == SimState.STOPPED and self.nest_session is not None:
                self.nest_session.stop()

    def _serve_session(self, session: NestSession) -> None:
        """Serve the NEST API's calls on this (the main, NEST's) thread until stopped."""
        self._started = True
        self._running.set()
        logger.info("serving: the NEST session")
        session.serve()
        self._end_as(SimState.STOPPED)

    def _execute(self, code: CodeType) -> None:
        self._started = True
        self._running.set()
        logger.info("running %s", self.main_script)
        outcome = run_script(code, self.experiment_dir / self.main_script)
        # The data first: "completed" means spikes.npz and the script's results are on
        # disk. The plots come after the state (see _finish): they delay nothing.
        self._save_results()
        self._end_as(outcome)

    def _end_as(self, state: SimState) -> None:
        """Enter a terminal state unless one was entered already (a stop wins)."""
        with self.lifecycle.lock:
            if self.lifecycle.is_terminal:
                return
            if state == SimState.STOPPED:
                self.lifecycle.request(SimState.STOPPED)
            else:
                self.lifecycle.fire("complete")

    def _fail(self, exc: SimServerError | ScriptError) -> None:
        if isinstance(exc, ScriptError):
            error = exc.error
        else:
            error = {"type": exc.error_type, "message": str(exc), **exc.details()}
            print(f"{error['type']}: {exc}", file=sys.stderr, flush=True)
        logger.error("failed: %s", error["message"])
        with self.lifecycle.lock:
            if not self.lifecycle.is_terminal:
                self.lifecycle.fire("fail", error=error)

    def _finish(self) -> None:
        if self.nest_session is not None and self._started:
            try:
                self.nest_session.save_spikes(self.results_dir)
            except Exception:
                logger.exception("the NEST session's spikes could not be saved")
        if self.kernel is not None:
            if self._started:
                self._save_results()
                # The state is reported: the plots take the CPU from nothing else, such
                # as the next run on a small host (a raster is ~0.5 s of matplotlib).
                lower_priority()
                self.kernel.draw(self.results_dir)
            self.kernel.shutdown()
        self.exit_code = EXIT_OK if self.lifecycle.state != SimState.FAILED else EXIT_FAILED
        self.write_status()
        logger.info("exiting: %s (exit code %d)", self.lifecycle.state.value, self.exit_code)

    def _save_results(self) -> None:
        """Let the engines save the run's data, once (on the main thread)."""
        if self._results_saved or self.kernel is None:
            return
        self._results_saved = True
        signal.signal(signal.SIGTERM, _finish_first)  # a stop must not cut a file in half
        self.kernel.finalize(self.results_dir)

    def _refresh_status(self) -> None:
        """Write the status when asked (``_status_due``), and every _STATUS_INTERVAL
        while the script (or session) runs."""
        while not self.lifecycle.is_terminal:
            due = self._status_due.wait(_STATUS_INTERVAL)
            self._status_due.clear()
            if due or self._running.is_set():
                self.write_status()


def _usage() -> tuple[float, int]:
    """CPU seconds of this process and its waited-for children; their peak RSS (bytes)."""
    own, children = (resource.getrusage(who)
                     for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return cpu, max(own.ru_maxrss, children.ru_maxrss) * 1024  # Linux: KiB


def _drive_session(session: NestSession, state: SimState) -> None:
    """The lifecycle's state, as the NEST session obeys it."""
    if state == SimState.STARTED:
        session.resume()
    elif state == SimState.PAUSED:
        session.pause()
    elif state in TERMINAL_STATES:
        session.stop()


def _live_status_writer(run_dir: Path) -> LiveStatusWriter | None:
    """The shared-memory status; without it (the run dir is full, say) status reads
    go to the control API, as for a server on another host."""
    try:
        return LiveStatusWriter(run_dir)
    except OSError as exc:
        logger.warning("no live status in shared memory (%s): status reads use the "
                       "control API", exc)
        return None


def bind_address(host: str) -> str:
    """The address to serve the control API on: ``host``, or for ``NODE_HOST`` the
    address of this node's hostname (what the backend on another host can reach).

    Raises:
        OSError: the hostname does not resolve.
    """
    if host != NODE_HOST:
        return host
    return socket.gethostbyname(socket.gethostname())


def _on_sigterm(signum: int, frame: Any) -> None:
    # Interrupts whatever the main thread is doing, even a blocking call outside
    # run_loop; the script unwinds through its finally blocks and results are saved.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SimulationStopped("terminated by SIGTERM")


def _finish_first(signum: int, frame: Any) -> None:
    logger.warning("SIGTERM while saving the results: finishing the save first")


def configure_logging(run_dir: Path) -> None:
    logs = run_dir / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / SIMULATION_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("transitions").setLevel(logging.WARNING)


def belongs_to_this_launch(run_dir: Path, token: str) -> bool:
    """True if ``run.json`` names this process's token.

    A simulation server started by a backend that died before it could adopt it
    may come up after a new backend has launched the run again in the same
    directory; it must then leave without writing anything.
    """
    try:
        config = read_json(run_dir / RUN_CONFIG_FILE)
    except ValueError:
        return False
    recorded = config.get("token_sha256", "") if isinstance(config, dict) else ""
    return hmac.compare_digest(recorded, token_digest(token))


def main(run_dir: Path, token: str, inside: Callable[[], None] = lambda: None) -> int:
    if not belongs_to_this_launch(run_dir, token):
        print(f"simserver: {run_dir} belongs to another launch; leaving it alone",
              file=sys.stderr)
        return EXIT_USAGE
    # Control requests must not wait long for the GIL while a script computes.
    sys.setswitchinterval(0.0005)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)
    configure_logging(run_dir)
    signal.signal(signal.SIGTERM, _on_sigterm)
    server = SimulationServer(run_dir, token, inside)
    return server.run()
