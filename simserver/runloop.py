"""The ``run_loop`` wrapper: pause, stop and timeouts around every kernel step."""
from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable

from lifecycle.clock import RunningTime
from lifecycle.live import LiveStatusWriter
from simserver.errors import SimulationStopped, SimulationTimeout
from simserver.kernel import Kernel

logger = logging.getLogger(__name__)

# Simulated time is steps × timestep; a timeout that is a whole number of steps
# must not lose its last step to float rounding, at any magnitude.
_RELATIVE_TOLERANCE = 1e-9
#: Wall time of the steps ``run_loop(n)`` hands the engines at once, when they compose:
#: the most a pause or stop may wait for, against the per-call cost of a short step
#: (NEST's ``Run`` costs ~60 us beyond its updates, 6-10 % of 1 ms of a 1000-neuron
#: network).
CHUNK_SECONDS = 0.005


class RunLoop:
    """Gates the kernel: blocks while paused, raises when stopped or timed out.

    The fast path of :meth:`run_loop` reads two flags and the clock; everything
    else happens only when an operator changed something.
    """

    def __init__(self, kernel: Kernel, *, sim_timeout: float | None = None,
                 real_timeout: float | None = None, real_time_factor: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 live: LiveStatusWriter | None = None,
                 moving: Callable[[], None] | None = None) -> None:
        """``moving``: called (on the script's thread) after the first step of each start
        and resume, so that whoever follows the run learns at once that it moves."""
        self.kernel = kernel
        self.sim_timeout = sim_timeout
        self._max_steps = math.inf if sim_timeout is None else \
            math.floor(sim_timeout / kernel.timestep * (1 + _RELATIVE_TOLERANCE))
        self.real_timeout = real_timeout
        self.real_time_factor = real_time_factor
        self._clock = clock
        self._cond = threading.Condition()
        self._held = True            # until the first start
        self._stopping = False
        #: Set while a step is in flight (from the check of ``_held`` to its publication):
        #: :meth:`settle` waits for it, so that a pause is only reported once the
        #: simulated time it reports has stopped moving.
        self._stepping = False
        self._running = RunningTime(clock)
        self._pace_origin = (0.0, 0.0)
        self._chunk = 1              # steps of the next chunk (see _advance)
        self._moving = moving
        self._announce = False       # the next step is the first since a release
        #: Set while a control request is in flight: steps go one at a time meanwhile.
        #: Its threads need the GIL at every socket call, and NEST holds it through each
        #: ``Run``: a chunk at every wait made a pause take 25 ms instead of 8 (p50).
        self.attending = False
        #: Where the step count and running time are published to the backend (its
        #: readings are of ``time.monotonic``: give one only with that clock).
        self.live = live
        if live is not None:
            live.update(timestep=kernel.timestep, timeout=(sim_timeout, real_timeout),
                        running=self._running.reading())

    # -- commands (any thread) ------------------------------------------------

    def release(self) -> None:
        """Let the loop advance (start, resume)."""
        with self._cond:
            now = self._running.run()
            self._held = False
            self._announce = True
            self._pace_origin = (now, self.kernel.time)
            self._publish_running()
            self._cond.notify_all()

    def hold(self) -> None:
        """Make the loop block before its next step (pause)."""
        with self._cond:
            self._held = True
            self._running.hold()
            self._publish_running()
            self._cond.notify_all()

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the step in flight, if any, to end and be
        published (a step is not interrupted); return whether none is in flight. Call
        after :meth:`hold`: no step starts after this returned True."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._stepping, timeout)

    def request_stop(self) -> None:
        """Make the loop raise ``SimulationStopped`` at once, even when blocked."""
        with self._cond:
            self._stopping = True
            self._running.hold()
            self._publish_running()
            self._cond.notify_all()

    def _publish_running(self) -> None:
        if self.live is not None:
            self.live.update(running=self._running.reading())

    @property
    def stopping(self) -> bool:
        return self._stopping

    def real_time(self) -> float:
        """Wall-clock seconds spent started (paused time does not count)."""
        return self._running.elapsed()

    # -- the script's side ----------------------------------------------------

    def run_loop(self, n: int = 1) -> None:
        """Advance ``n`` kernel steps, honouring pause, stop and timeouts before each.

        When the kernel's steps compose (see :meth:`Kernel.steps_compose`), several of
        the ``n`` go to the engines as one step, as many as take about
        :data:`CHUNK_SECONDS` of wall time: a pause or stop then lands at the end of such
        a chunk, still between two steps.
        """
        kernel, live = self.kernel, self.live
        while n > 0:
            if self._held or self._stopping:
                self.wait_if_paused()
            if kernel.steps >= self._max_steps:
                self._time_out(f"simulated time {kernel.time:g} ms reached the timeout of "
                               f"{self.sim_timeout:g} ms")
            if self.real_timeout is not None and self.real_time() >= self.real_timeout:
                self._time_out(f"the run reached its real-time timeout of "
                               f"{self.real_timeout:g} s")
            if self.real_time_factor:
                self._pace()  # paced step by step
            # A hold sets _held, then waits while _stepping is set: one of the two sees
            # the other's flag (the GIL orders them), so no step begins unseen.
            self._stepping = True
            try:
                if self._held:
                    continue  # held since the check above: wait at the top
                if n > 1 and not (self.real_time_factor or self.attending) \
                        and kernel.steps_compose():
                    n -= self._advance(n)
                else:
                    kernel.step()
                    n -= 1
                if live is not None:
                    live.stepped(kernel.steps)
                if self._announce:
                    self._announce = False
                    if self._moving is not None:
                        self._moving()
            finally:
                self._stepping = False
                if self._held:
                    with self._cond:
                        self._cond.notify_all()  # a hold waits in settle()

    def _advance(self, n: int) -> int:
        """Advance up to ``n`` steps in one chunk; return how many. A chunk is at most
        twice the last, and takes about :data:`CHUNK_SECONDS` at the last chunk's pace."""
        steps = min(n, self._max_steps - self.kernel.steps, self._chunk)
        began = time.perf_counter()
        self.kernel.advance(steps)
        elapsed = time.perf_counter() - began
        paced = int(CHUNK_SECONDS * steps / elapsed) if elapsed > 0 else 2 * steps
        self._chunk = max(1, min(2 * steps, paced))
        return steps

    def _time_out(self, reason: str) -> None:
        logger.info("timeout: %s", reason)
        raise SimulationTimeout(reason)

    def wait_if_paused(self) -> None:
        """Block while held; raise ``SimulationStopped`` once a stop was requested."""
        with self._cond:
            while self._held and not self._stopping:
                self._cond.wait()
            if self._stopping:
                raise SimulationStopped("the simulation was stopped")

    def _pace(self) -> None:
        """Sleep so simulated time runs at most ``real_time_factor`` × wall time."""
        origin_wall, origin_sim = self._pace_origin
        target = origin_wall + (self.kernel.time + self.kernel.timestep - origin_sim) \
            / 1000.0 / self.real_time_factor
        with self._cond:
            while not (self._held or self._stopping):
                delay = target - self._clock()
                if delay <= 0:
                    return
                self._cond.wait(delay)
        self.wait_if_paused()


class Simulation:
    """The ``sim`` object a script sees."""

    def __init__(self, loop: RunLoop, params: dict[str, Any], results_dir: Path) -> None:
        self._loop = loop
        self.params = params
        self.results_dir = results_dir
        self.run_loop = loop.run_loop

    @property
    def time(self) -> float:
        """Simulated time in ms."""
        return self._loop.kernel.time

    @property
    def steps(self) -> int:
        return self._loop.kernel.steps

    @property
    def timestep(self) -> float:
        return self._loop.kernel.timestep

    @property
    def engines(self) -> dict[str, Any]:
        return self._loop.kernel.engines

    @property
    def real_time(self) -> float:
        return self._loop.real_time()

    def __repr__(self) -> str:
        return f"<Simulation t={self.time:g} ms steps={self.steps}>"
