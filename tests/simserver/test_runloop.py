"""The run loop around the kernel: pause, stop, timeouts and pacing; and the kernel's
lockstep of transceivers and engines.

Blocking is proven with a thread and bounded waits; a thread is "blocked in X" once
its stack shows ``threading.Condition.wait`` called from ``RunLoop.X``.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from simserver.engines import Engine
from simserver.errors import SimulationStopped, SimulationTimeout
from simserver.kernel import Kernel
from simserver.runloop import RunLoop, Simulation
from tests.support import wait_until

# A stop must reach a blocked loop well within this (the brief: "immediately").
STOP_LATENCY = 0.1


class RecordingEngine(Engine):
    """Counts its steps; ``log`` (shared between engines) gets (name, t, dt) per step."""

    type_name = "recording"

    def __init__(self, name: str = "counter", log: list | None = None) -> None:
        super().__init__(name, {}, Path("."))
        self.log = [] if log is None else log
        self.count = 0
        self.on_step: Callable[[int], None] | None = None

    def step(self, t: float, dt: float) -> None:
        self.count += 1
        self.log.append((self.name, t, dt))
        if self.on_step is not None:
            self.on_step(self.count)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LoopThread(threading.Thread):
    """Calls ``loop.run_loop(n)`` on its own thread and keeps what it raised."""

    def __init__(self, loop: RunLoop, n: int = 1) -> None:
        super().__init__(daemon=True)
        self.loop, self.n = loop, n
        self.raised: BaseException | None = None

    def run(self) -> None:
        try:
            self.loop.run_loop(self.n)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            self.raised = exc

    def blocked_in(self, method: str) -> bool:
        frame = sys._current_frames().get(self.ident)
        if frame is None or frame.f_code.co_name != "wait":
            return False
        while frame is not None:
            if frame.f_code.co_name == method:
                return True
            frame = frame.f_back
        return False

    def wait_blocked_in(self, method: str) -> None:
        wait_until(lambda: self.blocked_in(method), 5, f"run_loop to block in {method}")

    def finish(self, timeout: float = 5.0) -> float:
        """Join; return how long it took. Fails if the thread is still running."""
        started = time.monotonic()
        self.join(timeout)
        assert not self.is_alive(), "run_loop did not return"
        return time.monotonic() - started


def make_loop(timestep: float = 1.0, **options: object) -> tuple[RunLoop, RecordingEngine]:
    engine = RecordingEngine()
    return RunLoop(Kernel({"counter": engine}, [], timestep), **options), engine


def start_blocked(loop: RunLoop, method: str, n: int = 1) -> LoopThread:
    """Call ``loop.run_loop(n)`` on a thread; return once it blocks in ``method``."""
    thread = LoopThread(loop, n)
    thread.start()
    thread.wait_blocked_in(method)
    return thread


def stop_at_once(loop: RunLoop, thread: LoopThread) -> None:
    """Request a stop; the blocked thread must raise SimulationStopped at once."""
    loop.request_stop()
    assert thread.finish() < STOP_LATENCY
    assert isinstance(thread.raised, SimulationStopped)


# -- pause, release and stop ----------------------------------------------------

HOLDS = pytest.mark.parametrize("steps_before", [0, 4], ids=["never-started", "paused"])


def held_loop(steps_before: int) -> tuple[RunLoop, RecordingEngine, LoopThread]:
    """A loop asked for 10 steps, held before the first or paused after ``steps_before``."""
    loop, engine = make_loop()
    if steps_before:
        engine.on_step = lambda count: loop.hold() if count == steps_before else None
        loop.release()
    thread = start_blocked(loop, "wait_if_paused", 10)
    thread.join(0.1)
    assert thread.is_alive() and engine.count == steps_before
    return loop, engine, thread


@HOLDS
def test_a_held_loop_blocks_until_released(steps_before: int) -> None:
    loop, engine, thread = held_loop(steps_before)
    loop.release()
    thread.finish()
    assert thread.raised is None
    assert engine.count == 10 and loop.kernel.time == 10.0


@HOLDS
def test_stop_raises_at_once_in_a_held_loop(steps_before: int) -> None:
    loop, engine, thread = held_loop(steps_before)
    stop_at_once(loop, thread)
    assert engine.count == steps_before and loop.stopping


def test_settle_waits_for_the_step_in_flight_and_none_starts_after() -> None:
    loop, engine = make_loop()
    live_steps: list[int] = []
    loop.live = type("Live", (), {"stepped": lambda self, steps: live_steps.append(steps),
                                  "update": lambda self, **fields: None})()
    in_step, finish_step = threading.Event(), threading.Event()

    def slow_third(count: int) -> None:
        if count == 3:
            in_step.set()
            assert finish_step.wait(5)

    engine.on_step = slow_third
    loop.release()
    thread = LoopThread(loop, 10)
    thread.start()
    assert in_step.wait(5)
    loop.hold()
    assert not loop.settle(0.05)           # the third step is still running
    threading.Timer(0.05, finish_step.set).start()
    assert loop.settle(5)
    # Settled: the step in flight ended and was published, and no other began.
    assert engine.count == 3 and live_steps == [1, 2, 3]
    thread.wait_blocked_in("wait_if_paused")
    assert engine.count == 3 and live_steps == [1, 2, 3]
    loop.release()
    thread.finish()
    assert thread.raised is None and engine.count == 10


def test_settle_answers_at_once_between_run_loop_calls() -> None:
    loop, engine = make_loop()
    loop.release()
    loop.run_loop(2)
    loop.hold()
    began = time.monotonic()
    assert loop.settle(5) and time.monotonic() - began < STOP_LATENCY


def test_a_stop_is_final_and_escapes_except_exception() -> None:
    assert not issubclass(SimulationStopped, Exception)
    loop, engine = make_loop()
    loop.release()
    loop.run_loop(2)
    loop.request_stop()
    loop.release()  # a late resume does not undo the stop
    swallowed = False
    with pytest.raises(SimulationStopped):
        try:
            loop.run_loop(1)
        except Exception:  # noqa: BLE001 - the point of the test
            swallowed = True
    assert not swallowed and engine.count == 2


# -- timeouts -------------------------------------------------------------------

@pytest.mark.parametrize("timestep, sim_timeout, steps", [
    (1.0, 10.0, 10),
    (0.1, 1.0, 10),     # 0.1 accumulates to 0.999...; still exactly 10 steps
    (0.3, 0.9, 3),      # 3 * 0.3 == 0.8999999999999999
    (0.025, 1.0, 40),
    (1.0, 10.5, 10),    # a step that would pass the timeout is not taken
    (1.0, 0.0, 0),
])
def test_sim_timeout_is_raised_before_advancing_past_it(
        timestep: float, sim_timeout: float, steps: int) -> None:
    loop, engine = make_loop(timestep, sim_timeout=sim_timeout)
    loop.release()
    taken = 0
    with pytest.raises(SimulationTimeout, match="timeout"):
        while True:
            loop.run_loop(1)
            taken += 1
    assert taken == engine.count == steps
    assert loop.kernel.time == pytest.approx(steps * timestep)
    with pytest.raises(SimulationTimeout):
        loop.run_loop(5)
    assert engine.count == steps


def test_sim_timeout_inside_one_multi_step_call() -> None:
    loop, engine = make_loop(1.0, sim_timeout=10.0)
    loop.release()
    with pytest.raises(SimulationTimeout):
        loop.run_loop(1000)
    assert engine.count == 10
    assert max(t + dt for _, t, dt in engine.log) == 10.0


def test_sim_timeout_is_exact_for_long_runs() -> None:
    loop, engine = make_loop(0.1, sim_timeout=2e7)
    loop.kernel.steps = 200_000_000 - 1   # one step before the timeout
    loop.release()
    loop.run_loop(1)
    assert engine.count == 1 and loop.kernel.steps == 200_000_000
    with pytest.raises(SimulationTimeout):
        loop.run_loop(1)


def test_real_time_timeout_with_a_fake_clock() -> None:
    clock = FakeClock()
    loop, engine = make_loop(real_timeout=5.0, clock=clock)

    def one_second_per_step(count: int) -> None:
        clock.now += 1.0

    engine.on_step = one_second_per_step
    clock.now += 60.0        # time before the first start does not count
    loop.release()
    with pytest.raises(SimulationTimeout, match="real-time"):
        loop.run_loop(100)
    assert engine.count == 5
    assert loop.real_time() == 5.0


def test_paused_time_does_not_count_towards_real_time() -> None:
    clock = FakeClock()
    loop, engine = make_loop(real_timeout=4.0, clock=clock)
    assert loop.real_time() == 0.0
    loop.release()
    clock.now += 3.0
    loop.hold()
    clock.now += 100.0
    assert loop.real_time() == 3.0

    loop.release()
    loop.run_loop(1)         # 3 s of the 4 s used: it may step
    clock.now += 1.0
    assert loop.real_time() == 4.0
    with pytest.raises(SimulationTimeout):
        loop.run_loop(1)
    assert engine.count == 1


def test_the_first_step_of_each_start_and_resume_is_announced_once() -> None:
    announced: list[int] = []
    loop, engine = make_loop(moving=lambda: announced.append(engine.count))
    loop.release()
    loop.run_loop(50)        # in chunks: announced after the first, not after the others
    loop.run_loop(3)
    assert announced == [1] and engine.count == 53
    loop.hold()
    loop.release()           # a resume
    loop.run_loop(2)
    assert announced == [1, 54]


# -- pacing ---------------------------------------------------------------------

def test_real_time_factor_paces_the_loop() -> None:
    loop, engine = make_loop(1.0, real_time_factor=10.0)
    loop.release()
    started = time.monotonic()
    loop.run_loop(100)       # 100 ms simulated at 10x real time: 10 ms of wall time
    elapsed = time.monotonic() - started
    assert engine.count == 100
    assert 0.009 <= elapsed < 1.0


def paced_loop() -> tuple[RunLoop, RecordingEngine, LoopThread]:
    """A released loop paced at 1 ms simulated per wall second, waiting for its first step."""
    loop, engine = make_loop(1.0, real_time_factor=0.001)
    loop.release()
    return loop, engine, start_blocked(loop, "_pace")


def test_stop_interrupts_a_pacing_wait() -> None:
    loop, engine, thread = paced_loop()
    stop_at_once(loop, thread)
    assert engine.count == 0


def test_hold_interrupts_a_pacing_wait_and_blocks() -> None:
    loop, engine, thread = paced_loop()
    loop.hold()
    thread.wait_blocked_in("wait_if_paused")
    assert engine.count == 0
    stop_at_once(loop, thread)


# -- chunks: several steps in one engine call when steps compose ----------------

class ComposingEngine(RecordingEngine):
    """A recording engine whose steps compose; ``cost`` seconds of work per step."""

    def __init__(self, name: str = "counter", log: list | None = None,
                 cost: float = 0.0) -> None:
        super().__init__(name, log)
        self.cost = cost

    def steps_compose(self) -> bool:
        return True

    def step(self, t: float, dt: float) -> None:
        if self.cost:
            time.sleep(self.cost * round(dt / 0.5))  # simulated work (timestep 0.5)
        super().step(t, dt)


def chunk_loop(cost: float = 0.0, **options: object) -> tuple[RunLoop, ComposingEngine]:
    engine = ComposingEngine(cost=cost)
    loop = RunLoop(Kernel({"counter": engine}, [], 0.5), **options)
    loop.release()
    return loop, engine


def chunks(engine: RecordingEngine) -> list[int]:
    """Steps of 0.5 ms per engine call, checking that the calls cover time end to end."""
    t = 0.0
    for _, start, dt in engine.log:
        assert start == pytest.approx(t)
        t = start + dt
    return [round(dt / 0.5) for _, _, dt in engine.log]


def test_composing_steps_go_to_the_engine_in_growing_chunks() -> None:
    loop, engine = chunk_loop()
    loop.run_loop(1000)
    found = chunks(engine)
    assert sum(found) == 1000 and loop.kernel.steps == 1000 and loop.kernel.time == 500.0
    assert found[0] == 1 and len(found) < 20
    assert all(b <= 2 * a for a, b in zip(found, found[1:], strict=False))  # doubling at most
    loop.run_loop(1)
    assert chunks(engine)[-1] == 1


def test_a_chunk_takes_about_chunk_seconds_of_wall_time() -> None:
    # 2 ms a step: CHUNK_SECONDS (5 ms) fits two, however slow the machine is.
    loop, engine = chunk_loop(cost=0.002)
    loop.run_loop(40)
    found = chunks(engine)
    assert sum(found) == 40 and max(found) == 2


def test_a_chunk_stops_at_the_sim_timeout() -> None:
    loop, engine = chunk_loop(sim_timeout=10.25)
    with pytest.raises(SimulationTimeout):
        loop.run_loop(1000)
    assert sum(chunks(engine)) == 20 and loop.kernel.time == 10.0


def test_a_pause_lands_between_chunks() -> None:
    loop, engine = chunk_loop()
    engine.on_step = lambda count: loop.hold() if count == 3 else None
    thread = start_blocked(loop, "wait_if_paused", 100)
    assert loop.kernel.steps == sum(chunks(engine)) == 1 + 2 + 4
    loop.release()
    thread.finish()
    assert thread.raised is None and loop.kernel.steps == sum(chunks(engine)) == 100


@pytest.mark.parametrize("why", ["transceiver", "engine that does not compose",
                                 "real-time factor", "control request in flight"])
def test_steps_go_one_by_one_unless_everything_composes(why: str) -> None:
    log: list[tuple] = []
    engines: dict[str, Engine] = {"brain": ComposingEngine("brain", log)}
    transceivers = [lambda given, t: None] if why == "transceiver" else []
    if why.startswith("engine"):
        engines["world"] = RecordingEngine("world", log)
    options = {"real_time_factor": 1e6} if why == "real-time factor" else {}
    loop = RunLoop(Kernel(engines, transceivers, 0.5), **options)
    loop.attending = why == "control request in flight"
    loop.release()
    loop.run_loop(50)
    assert [dt for name, _, dt in log if name == "brain"] == [0.5] * 50


# -- the kernel and the script's view -------------------------------------------

def test_kernel_runs_transceivers_then_engines_in_order() -> None:
    log: list[tuple] = []
    engines = {"world": RecordingEngine("world", log), "brain": RecordingEngine("brain", log)}
    kernel = Kernel(engines, [], 0.5)

    def sense(given: dict[str, Engine], t: float) -> None:
        assert given is engines
        log.append(("sense", t))

    def act(given: dict[str, Engine], t: float) -> None:
        log.append(("act", t))

    kernel.transceivers = [sense, act]
    for _ in range(2):
        kernel.step()
    assert log == [
        ("sense", 0.0), ("act", 0.0), ("world", 0.0, 0.5), ("brain", 0.0, 0.5),
        ("sense", 0.5), ("act", 0.5), ("world", 0.5, 0.5), ("brain", 0.5, 0.5),
    ]
    assert kernel.steps == 2 and kernel.time == 1.0


def test_kernel_time_is_steps_times_timestep() -> None:
    kernel = Kernel({"counter": RecordingEngine()}, [], 0.1)
    for _ in range(10):
        kernel.step()
    assert sum([0.1] * 10) != 1.0       # accumulating would drift
    assert kernel.time == 1.0 and kernel.steps == 10


def test_simulation_is_the_scripts_view_of_the_loop(tmp_path: Path) -> None:
    loop, engine = make_loop(0.5, sim_timeout=100.0)
    sim = Simulation(loop, {"rate": 3}, tmp_path)
    loop.release()
    sim.run_loop(4)
    assert (sim.time, sim.steps, sim.timestep) == (2.0, 4, 0.5)
    assert sim.engines == {"counter": engine}
    assert sim.params == {"rate": 3} and sim.results_dir == tmp_path
    assert sim.real_time >= 0.0
    assert repr(sim) == "<Simulation t=2 ms steps=4>"
