"""The warm pool's parts, in process: which runs a warm server takes, the handoff channel,
the sizes, and the pool's calls through its OS seam (recorded, real processes)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from backend.config import Config
from backend.launchers import Exit, LaunchSpec, LocalLauncher
from backend.launchers import pool as pool_module
from backend.launchers.boundary import MarkerBoundary, join_argv, open_boundary, still_joining
from backend.launchers.pool import (REFILL_DELAY, REFILL_MAX_WAIT, PoolOps, WarmPool,
                                    is_waiting, warm_kind)
from backend.queue import Capacity
from lifecycle.messages import EXPERIMENT_DIR, LOGS_DIR, WARM_READY, Handoff
from simserver.warm import read_handoff
from tests.support import alive, cpu_priority, wait_until


#: An experiment no warm server takes: spawned cold.
NEURON = {"main_script": "m.py", "engines": {"c": {"type": "neuron"}}}


def experiment(tmp_path: Path, config: dict, sim_id: str = "sim1") -> Path:
    run_dir = tmp_path / "runs" / sim_id
    (run_dir / EXPERIMENT_DIR).mkdir(parents=True)
    (run_dir / LOGS_DIR).mkdir()
    (run_dir / EXPERIMENT_DIR / "experiment.json").write_text(json.dumps(config))
    return run_dir


@pytest.mark.parametrize("config, kind", [
    ({"main_script": "main.py"}, "python"),
    ({"main_script": "m.py", "engines": {"a": {"type": "python", "model": "a.py:A"}}}, "python"),
    ({"main_script": "m.py", "engines": {"b": {"type": "nest"}, "w": {"type": "python"}}},
     "nest"),
    ({"nest_session": {}}, "nest"),
    ({"main_script": "m.py", "engines": {"c": {"type": "neuron"}}}, None),
    ({"main_script": "m.py", "engines": {"b": {"type": "nest"}, "c": {"type": "neuron"}}},
     None),
    ({"main_script": "m.py", "engines": ["not", "a", "dict"]}, None),
])
def test_the_kind_of_warm_server_a_run_can_take(tmp_path: Path, config: dict,
                                                kind: str | None) -> None:
    assert warm_kind(experiment(tmp_path, config)) == kind


def test_an_unreadable_experiment_is_spawned_cold(tmp_path: Path) -> None:
    run_dir = experiment(tmp_path, {})
    (run_dir / EXPERIMENT_DIR / "experiment.json").write_text("{broken")
    assert warm_kind(run_dir) is None


def test_the_channel_takes_one_handoff_and_is_then_gone() -> None:
    handoff = Handoff(run_dir="/r", cwd="/r/experiment", env={"A": "1"}, token="t",
                      stdout="/r/logs/stdout.log", stderr="/r/logs/stderr.log",
                      limits={"memory_mb": 5})
    read, write = os.pipe()
    saved = os.dup(read)
    try:
        os.write(write, handoff.to_bytes())
        os.close(write)
        assert read_handoff(read) == handoff
        # The fd now reads /dev/null: nothing more can arrive on it.
        assert os.readlink(f"/proc/self/fd/{read}") == os.devnull
        assert os.read(read, 10) == b""
    finally:
        os.close(read)
        os.close(saved)


def test_an_empty_channel_is_no_run_and_garbage_is_refused() -> None:
    for data, expected in ((b"", None), (b"[1, 2]", ValueError), (b'{"x": 1}', ValueError)):
        read, write = os.pipe()
        os.write(write, data)
        os.close(write)
        try:
            if expected is None:
                assert read_handoff(read) is None
            else:
                with pytest.raises(expected):
                    read_handoff(read)
        finally:
            os.close(read)


def test_pool_sizes_are_config_and_must_not_be_negative(tmp_path: Path) -> None:
    assert (Config(data_dir=tmp_path).pool_nest, Config(data_dir=tmp_path).pool_python) == (2, 2)
    config = Config.from_env({"SIMBACKEND_POOL_NEST": "0", "SIMBACKEND_POOL_PYTHON": "3"},
                             data_dir=tmp_path)
    assert (config.pool_nest, config.pool_python) == (0, 3)
    with pytest.raises(ValueError, match="SIMBACKEND_POOL_NEST"):
        Config(data_dir=tmp_path, pool_nest=-1)


def test_the_pools_memory_is_not_lent_to_runs(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path, host_memory_mb=1000)
    assert Capacity.of_host(config).memory_mb == 1000
    assert Capacity.of_host(config, reserved_mb=440).memory_mb == 560
    assert Capacity.of_host(config, reserved_mb=5000).memory_mb == 0


class FakeWarmOps(PoolOps):
    """Warm servers that are small Pythons: say ready, read the channel, write down what
    they were handed, exit. Every spawn and handoff is recorded."""

    SERVER = ("import os, sys\n"
              "os.write(1, " + repr(WARM_READY) + ")\n"
              "data = sys.stdin.buffer.read()\n"
              "if data:\n"
              "    open(sys.argv[1], 'wb').write(data)\n")

    def __init__(self, out: Path) -> None:
        self.out = out
        self.calls: list[tuple] = []
        self.lock = threading.Lock()

    def spawn_warm(self, argv, **kwargs):  # type: ignore[override]
        with self.lock:
            n = len(self.calls)
            self.calls.append(("spawn", argv[argv.index("--warm") + 1]))
        return super().spawn_warm([sys.executable, "-c", self.SERVER,
                                   str(self.out / f"handed-{n}.json")], **kwargs)

    def hand(self, channel, message: bytes) -> None:  # type: ignore[override]
        with self.lock:
            self.calls.append(("hand", json.loads(message)["run_dir"]))
        super().hand(channel, message)

    def available_mb(self) -> float:
        return 1e6


def test_the_pool_hands_a_run_once_refills_and_lets_its_idle_go(tmp_path: Path) -> None:
    ops = FakeWarmOps(tmp_path)
    local = LocalLauncher(boundary=MarkerBoundary("k"))
    pool = WarmPool(local, tmp_path / "runs", {"nest": 0, "python": 1}, ops)
    try:
        wait_until(lambda: pool.pool()["python"]["idle"] == 1, 20, "a warm server")
        assert pool.reserved_memory_mb() > 0
        run_dir = experiment(tmp_path, {"main_script": "main.py"})
        exits: list[Exit] = []
        handle = pool.spawn(LaunchSpec("sim1", run_dir, "secret", {"memory_mb": 9}),
                            lambda h, e: exits.append(e))
        wait_until(lambda: exits, 20, "the handed server to exit")
        assert exits == [Exit(0, None)]
        handed = Handoff.from_bytes((tmp_path / "handed-0.json").read_bytes())
        assert handed.token == "secret" and handed.limits == {"memory_mb": 9}
        assert handed.env["SIMBACKEND_RUN"] == "sim1:k"
        assert "SIMSERVER_TOKEN" not in handed.env
        assert handed.cwd == str(run_dir / EXPERIMENT_DIR)
        assert handle.describe() == f"pid {handle.pid}"
        wait_until(lambda: pool.pool()["python"]["idle"] == 1, 20, "the refill")
        assert sorted(ops.calls) == [("hand", str(run_dir)), ("spawn", "python"),
                                     ("spawn", "python")]
        idle = [w.pid for w in pool._idle["python"]]
        assert all(is_waiting(pid) for pid in idle)
    finally:
        pool.close()
    for pid in idle:
        assert not alive(pid)


class Stub:
    """A run's handle as the pool sees it: over (``exited`` set) unless ``live``."""

    def __init__(self, live: bool = False) -> None:
        self.exited = threading.Event()
        if not live:
            self.exited.set()


class _Run:
    """A handed server's process as the pool sees it: running until ``code`` is set."""

    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code


def test_a_refill_waits_for_the_runs_handed_last_but_not_for_long(tmp_path: Path) -> None:
    pool = WarmPool(LocalLauncher(boundary=MarkerBoundary("k")), tmp_path / "runs",
                    {"nest": 0, "python": 0})
    try:
        with pool._cond:
            now, run = time.monotonic(), _Run()
            pool._handed_at = now
            assert pool._settling() > REFILL_DELAY - 0.1  # just handed
            pool._handed_at = now - REFILL_DELAY - 0.1
            pool._recent = [(pool._handed_at, run)]
            assert pool._settling() > 0  # its run still runs
            run.code = 0
            assert pool._settling() == 0 and pool._recent == []  # it ended
            pool._recent = [(now - REFILL_MAX_WAIT - 0.1, _Run())]
            assert pool._settling() == 0  # running too long to be waited for
    finally:
        pool.close()


def test_a_warm_server_dead_at_handoff_is_replaced_by_a_cold_spawn(tmp_path: Path) -> None:
    ops = FakeWarmOps(tmp_path)
    spawned: list[str] = []

    class ColdLauncher(LocalLauncher):
        def spawn(self, spec, on_exit):  # type: ignore[override]
            spawned.append(spec.sim_id)
            return Stub()

    pool = WarmPool(ColdLauncher(boundary=MarkerBoundary("k")), tmp_path / "runs",
                    {"python": 1}, ops)
    try:
        wait_until(lambda: pool.pool()["python"]["idle"] == 1, 20, "a warm server")
        warm = pool._idle["python"][0]
        os.kill(warm.pid, signal.SIGKILL)
        warm.popen.wait()
        run_dir = experiment(tmp_path, {"main_script": "main.py"})
        pool.spawn(LaunchSpec("sim1", run_dir, "t", {}), lambda h, e: None)
        assert spawned == ["sim1"]  # not handed to a dead server: spawned cold
    finally:
        pool.close()


def test_a_server_handed_while_warming_up_gets_the_backends_priority() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import os, sys\n"
                              "os.setpriority(os.PRIO_PROCESS, 0, 10)\n"
                              "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
                              "print('low', flush=True)\nsys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"low\n"
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 10
        assert os.sched_getscheduler(child.pid) == os.SCHED_IDLE
        PoolOps().raise_priority(child.pid)
        if os.geteuid() == 0:  # an unprivileged backend may not raise it (nor lower it)
            assert os.getpriority(os.PRIO_PROCESS, child.pid) == \
                os.getpriority(os.PRIO_PROCESS, 0)
            assert os.sched_getscheduler(child.pid) == os.sched_getscheduler(0)
    finally:
        child.stdin.close()
        child.wait(10)


class ColdSpawns(LocalLauncher):
    """A local launcher that only records the runs spawned cold."""

    def __init__(self, boundary) -> None:  # type: ignore[no-untyped-def]
        super().__init__(boundary=boundary)
        self.spawned: list[str] = []

    def spawn(self, spec, on_exit):  # type: ignore[override]
        self.spawned.append(spec.sim_id)
        return Stub()


def reserving_pool(tmp_path: Path) -> tuple[WarmPool, FakeWarmOps, ColdSpawns]:
    """A pool of one warm python server (a cgroup boundary where this host allows)."""
    ops = FakeWarmOps(tmp_path)
    local = ColdSpawns(open_boundary("auto", tmp_path / "runs"))
    pool = WarmPool(local, tmp_path / "runs", {"nest": 0, "python": 1}, ops)
    wait_until(lambda: pool.pool()["python"]["idle"] == 1, 20, "a warm server")
    return pool, ops, local


def spawns(ops: FakeWarmOps) -> int:
    return sum(call[0] == "spawn" for call in ops.calls)


def test_a_server_reserved_during_the_fetch_is_in_the_runs_boundary_and_handed_it(
        tmp_path: Path) -> None:
    pool, ops, local = reserving_pool(tmp_path)
    try:
        pid = pool._idle["python"][0].pid
        pool.reserve("sim1", {"main_script": "main.py"})  # returns at once, it moves
        assert pool.pool()["python"]["idle"] == 0 and is_waiting(pid)
        boundary = local.boundary
        if boundary.kind == "cgroup":
            wait_until(lambda: pid in [p.pid for p in boundary.members("sim1")], 10,
                       "the server in the run's cgroup")
        run_dir = experiment(tmp_path, {"main_script": "main.py"})
        handle = pool.spawn(LaunchSpec("sim1", run_dir, "t", {}), lambda h, e: None)
        assert handle.pid == pid and local.spawned == []
        assert ("hand", str(run_dir)) in ops.calls
        wait_until(lambda: (tmp_path / "handed-0.json").exists(), 20, "the handoff")
        pool.release("sim1")  # after the spawn: nothing left to give back
        wait_until(lambda: pool.pool()["python"]["idle"] == 1, 20, "the refill")
        assert pid not in [w.pid for w in pool._idle["python"]]
    finally:
        pool.close()
        # The run's own exit handling is not in this test (its on_exit does nothing):
        # end and remove its boundary as the backend does once a run has ended.
        local.boundary.kill("sim1")


def test_a_reservation_no_spawn_follows_goes_back_to_the_pool(tmp_path: Path) -> None:
    pool, ops, local = reserving_pool(tmp_path)
    try:
        pid = pool._idle["python"][0].pid
        pool.reserve("sim1", {"main_script": "main.py"})
        assert pool.pool()["python"]["idle"] == 0
        pool.release("sim1")
        pool.release("sim1")  # idempotent
        assert [w.pid for w in pool._idle["python"]] == [pid]  # the same, not a new one
        assert is_waiting(pid) and spawns(ops) == 1
        assert "sim1" not in local.boundary.runs()  # its empty boundary is gone
        if local.boundary.kind == "cgroup":
            room = local.boundary.waiting_room().read_text().split()
            assert str(pid) in room
    finally:
        pool.close()


def test_a_reservation_the_fetched_experiment_does_not_fit_is_given_back(
        tmp_path: Path) -> None:
    pool, ops, local = reserving_pool(tmp_path)
    try:
        pid = pool._idle["python"][0].pid
        pool.reserve("sim1", {"main_script": "main.py"})
        # Replaced meanwhile by one no warm server takes (NEURON): spawned cold.
        run_dir = experiment(tmp_path, {"main_script": "m.py",
                                        "engines": {"c": {"type": "neuron"}}})
        pool.spawn(LaunchSpec("sim1", run_dir, "t", {}), lambda h, e: None)
        assert local.spawned == ["sim1"]
        assert [w.pid for w in pool._idle["python"]] == [pid] and is_waiting(pid)
    finally:
        pool.close()


def test_nothing_is_reserved_for_a_kind_without_a_server_or_a_closed_pool(
        tmp_path: Path) -> None:
    pool, ops, local = reserving_pool(tmp_path)
    try:
        pool.reserve("sim1", {"main_script": "m.py", "engines": {"b": {"type": "nest"}}})
        pool.reserve("sim2", {"main_script": "m.py", "engines": {"c": {"type": "neuron"}}})
        pool.reserve("sim3", ["not", "a", "dict"])  # type: ignore[arg-type]
        assert pool.pool()["python"]["idle"] == 1 and pool._reserved == {}
    finally:
        pool.close()
    pool.reserve("sim4", {"main_script": "main.py"})
    pool.release("sim4")
    assert pool._reserved == {}


class NoEntry(MarkerBoundary):
    """A boundary no process can be moved into."""

    def enter(self, sim_id: str, pid: int) -> None:
        raise PermissionError("not allowed")


def test_a_server_that_cannot_be_moved_in_is_killed_and_the_run_spawned_cold(
        tmp_path: Path) -> None:
    ops = FakeWarmOps(tmp_path)
    local = ColdSpawns(NoEntry("k"))
    pool = WarmPool(local, tmp_path / "runs", {"nest": 0, "python": 1}, ops)
    try:
        wait_until(lambda: pool.pool()["python"]["idle"] == 1, 20, "a warm server")
        warm = pool._idle["python"][0]
        pool.reserve("sim1", {"main_script": "main.py"})
        wait_until(warm.moved.is_set, 10, "the move to fail")
        run_dir = experiment(tmp_path, {"main_script": "main.py"})
        pool.spawn(LaunchSpec("sim1", run_dir, "t", {}), lambda h, e: None)
        assert local.spawned == ["sim1"]  # never handed: no run outside its boundary
        assert warm.popen.poll() is not None and not (tmp_path / "handed-0.json").exists()
        pool.release("sim1")
    finally:
        pool.close()


class GatedWarmOps(FakeWarmOps):
    """Fake warm servers that warm up until their gate file exists (``open_gate``), and
    the pool's priority calls, recorded (and made: the real ones, on the real processes)."""

    SERVER = ("import os, sys, time\n"
              "while not os.path.exists(sys.argv[1] + '.go'):\n"
              "    time.sleep(0.005)\n"  # warming up
              "os.write(1, " + repr(WARM_READY) + ")\n"
              "data = sys.stdin.buffer.read()\n"
              "if data:\n"
              "    open(sys.argv[1], 'wb').write(data)\n")

    def __init__(self, out: Path, may_lower: bool = True) -> None:
        super().__init__(out)
        self._may = may_lower
        self.pids: list[int] = []
        self.gates: dict[int, Path] = {}

    def spawn_warm(self, argv, **kwargs):  # type: ignore[override]
        popen = super().spawn_warm(argv, **kwargs)
        self.pids.append(popen.pid)
        self.gates[popen.pid] = Path(popen.args[-1] + ".go")
        return popen

    def open_gate(self, pid: int) -> None:
        self.gates[pid].touch()

    def may_lower(self) -> bool:
        return self._may

    def lower_priority(self, pid: int) -> None:
        self._record("lower", pid)
        super().lower_priority(pid)

    def raise_priority(self, pid: int) -> None:
        self._record("raise", pid)
        super().raise_priority(pid)

    def hold(self, pid: int) -> bool:
        self._record("hold", pid)
        return super().hold(pid)

    def go_on(self, pid: int) -> None:
        self._record("go_on", pid)
        super().go_on(pid)

    def priority_calls(self) -> list[tuple]:
        return self._recorded("lower", "raise")

    def hold_calls(self) -> list[tuple]:
        return self._recorded("hold", "go_on")

    def _record(self, name: str, pid: int) -> None:
        with self.lock:
            self.calls.append((name, pid))

    def _recorded(self, *names: str) -> list[tuple]:
        with self.lock:
            return [c for c in self.calls if c[0] in names]


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP)."""
    return psutil.Process(pid).status() == psutil.STATUS_STOPPED


OURS = cpu_priority()
IDLE = (min(19, OURS[0] + 10), os.SCHED_IDLE)
#: Lowering is only done where the backend could raise it back.
MAY_LOWER = PoolOps().may_lower()


@pytest.mark.skipif(not MAY_LOWER, reason="this process may not raise a priority back")
def test_warm_ups_run_at_full_priority_until_a_run_starts(tmp_path: Path) -> None:
    """No run on the host: the warm-ups run at the backend's priority. A run starting
    (even one spawned cold) drops every warm-up still going on to idle priority; the
    one then taken for a run gets the backend's priority back before its handoff."""
    ops = GatedWarmOps(tmp_path)
    local = ColdSpawns(MarkerBoundary("k"))
    pool = WarmPool(local, tmp_path / "runs", {"nest": 0, "python": 2}, ops)
    try:
        wait_until(lambda: pool.pool()["python"]["starting"] == 2, 20, "two warm-ups")
        first, second = ops.pids
        assert ops.priority_calls() == []
        assert cpu_priority(first) == cpu_priority(second) == OURS
        cold = experiment(tmp_path, NEURON)
        pool.spawn(LaunchSpec("sim1", cold, "t", {}), lambda h, e: None)
        assert local.spawned == ["sim1"]
        assert sorted(ops.priority_calls()) == sorted([("lower", first), ("lower", second)])
        assert cpu_priority(first) == cpu_priority(second) == IDLE
        pool.launched("sim1")
        ops.open_gate(second)
        wait_until(lambda: pool.pool()["python"]["idle"] == 1, 20, "the second warm")
        run_dir = experiment(tmp_path, {"main_script": "main.py"}, "sim2")
        handle = pool.spawn(LaunchSpec("sim2", run_dir, "t", {}), lambda h, e: None)
        assert handle.pid == second  # the ready one, raised before it was handed
        assert ops.priority_calls()[2:] == [("raise", second)]
        assert ops.calls.index(("raise", second)) < ops.calls.index(("hand", str(run_dir)))
        assert cpu_priority(first) == IDLE  # still warming up, beside a run
    finally:
        pool.close()


def test_warm_ups_are_held_while_runs_launch(tmp_path: Path) -> None:
    """Warm-ups still going on when a run starts are stopped until every launch under
    way has ended; one taken for a run meanwhile goes on before its handoff; a ready
    server is never stopped, nor one that starts while the runs launch."""
    ops = GatedWarmOps(tmp_path)
    local = ColdSpawns(MarkerBoundary("k"))
    pool = WarmPool(local, tmp_path / "runs", {"nest": 0, "python": 3}, ops)
    try:
        wait_until(lambda: pool.pool()["python"]["starting"] == 3, 20, "three warm-ups")
        first, second, third = ops.pids
        ops.open_gate(third)
        wait_until(lambda: pool.pool()["python"]["idle"] == 1, 20, "the third warm")
        pool.spawn(LaunchSpec("cold", experiment(tmp_path, NEURON, "cold"), "t", {}),
                   lambda h, e: None)
        assert sorted(ops.hold_calls()) == [("hold", first), ("hold", second)]
        wait_until(lambda: stopped(first) and stopped(second), 10, "both stopped")
        assert not stopped(third)  # ready: it takes no CPU
        ops.open_gate(first)
        ops.open_gate(second)
        pool.reserve("sim1", {"main_script": "main.py"})  # the ready one: third
        run_dir = experiment(tmp_path, {"main_script": "main.py"}, "sim1")
        assert pool.spawn(LaunchSpec("sim1", run_dir, "t", {}), lambda h, e: None).pid == third
        pool.reserve("sim2", {"main_script": "main.py"})  # one still held
        taken = pool._reserved["sim2"].pid
        other = ({first, second} - {taken}).pop()
        run_dir = experiment(tmp_path, {"main_script": "main.py"}, "sim2")
        assert pool.spawn(LaunchSpec("sim2", run_dir, "t", {}), lambda h, e: None).pid == taken
        assert ops.calls.index(("go_on", taken)) < ops.calls.index(("hand", str(run_dir)))
        pool.launched("cold")
        pool.launched("sim1")
        assert stopped(other) and ("go_on", other) not in ops.calls  # sim2 still launches
        pool.launched("sim2")  # the last launch: the held go on at once
        assert ops.hold_calls()[-1] == ("go_on", other)
        wait_until(lambda: not stopped(other), 10, "the last warm-up to go on")
        wait_until(lambda: pool.pool()["python"]["idle"] >= 1, 20, "it warmed up")
        assert all(call[1] in (first, second) for call in ops.hold_calls())  # refills: never
    finally:
        pool.close()


def test_a_hold_ends_by_itself_if_no_launch_says_it_ended(tmp_path: Path,
                                                          monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(pool_module, "WARM_HOLD_MAX", 0.3)
    ops = GatedWarmOps(tmp_path)
    pool = WarmPool(ColdSpawns(MarkerBoundary("k")), tmp_path / "runs", {"python": 1}, ops)
    try:
        wait_until(lambda: pool.pool()["python"]["starting"] == 1, 20, "a warm-up")
        pool.spawn(LaunchSpec("cold", experiment(tmp_path, NEURON, "cold"), "t", {}),
                   lambda h, e: None)
        assert ops.hold_calls() == [("hold", ops.pids[0])]
        wait_until(lambda: ops.hold_calls()[-1] == ("go_on", ops.pids[0]), 10, "the end")
        assert not stopped(ops.pids[0])
    finally:
        pool.close()


def test_a_process_still_joining_its_cgroup_is_not_held(tmp_path: Path) -> None:
    """Stopped in the shell that joins the waiting room, a warm server could join it
    after the pool had moved it into a run's boundary: it is held only once it is the
    server."""
    procs = tmp_path / "procs"  # a FIFO stands in for cgroup.procs: the join waits on it
    os.mkfifo(procs)
    proc = subprocess.Popen(join_argv(procs, [sys.executable, "-c",
                                              "import sys; sys.stdin.read()"]),
                            stdin=subprocess.PIPE)
    try:
        assert still_joining(proc.pid)
        assert PoolOps().hold(proc.pid) is False and not stopped(proc.pid)
        assert procs.read_text().strip() == str(proc.pid)  # the join goes through
        wait_until(lambda: not still_joining(proc.pid), 10, "the exec of the server")
        assert PoolOps().hold(proc.pid) is True
        wait_until(lambda: stopped(proc.pid), 10, "stopped")
        PoolOps().go_on(proc.pid)
        wait_until(lambda: not stopped(proc.pid), 10, "going on")
    finally:
        proc.kill()
        proc.wait()
    assert not still_joining(proc.pid)  # gone


@pytest.mark.skipif(not MAY_LOWER, reason="this process may not raise a priority back")
def test_a_warm_up_that_starts_beside_a_live_run_starts_at_idle_priority(
        tmp_path: Path) -> None:
    ops = GatedWarmOps(tmp_path)
    run = Stub(live=True)

    class LiveRuns(ColdSpawns):
        def spawn(self, spec, on_exit):  # type: ignore[override]
            super().spawn(spec, on_exit)
            return run

    pool = WarmPool(LiveRuns(MarkerBoundary("k")), tmp_path / "runs", {"python": 1}, ops)
    try:
        wait_until(lambda: pool.pool()["python"]["starting"] == 1, 20, "a warm-up")
        cold = experiment(tmp_path, NEURON)
        pool.spawn(LaunchSpec("sim1", cold, "t", {}), lambda h, e: None)
        first = ops.pids[0]
        os.kill(first, signal.SIGKILL)  # dies idle: replaced, while the run is live
        wait_until(lambda: len(ops.pids) == 2 and pool.pool()["python"]["starting"] == 1,
                   20, "the replacement")
        assert ops.priority_calls() == [("lower", first), ("lower", ops.pids[1])]
        assert cpu_priority(ops.pids[1]) == IDLE
    finally:
        run.exited.set()
        pool.close()


def test_nothing_is_lowered_where_it_could_not_be_raised_back(tmp_path: Path) -> None:
    ops = GatedWarmOps(tmp_path, may_lower=False)
    local = ColdSpawns(MarkerBoundary("k"))
    pool = WarmPool(local, tmp_path / "runs", {"python": 1}, ops)
    try:
        wait_until(lambda: pool.pool()["python"]["starting"] == 1, 20, "a warm-up")
        cold = experiment(tmp_path, NEURON)
        pool.spawn(LaunchSpec("sim1", cold, "t", {}), lambda h, e: None)
        assert ops.priority_calls() == []
        assert cpu_priority(ops.pids[0]) == OURS
    finally:
        pool.close()


def test_the_pool_forgets_the_runs_that_are_over(tmp_path: Path) -> None:
    """Cold runs never make the pool refill: the handles it follows must not pile up."""
    local = ColdSpawns(MarkerBoundary("k"))
    pool = WarmPool(local, tmp_path / "runs", {"nest": 0, "python": 0}, GatedWarmOps(tmp_path))
    try:
        cold = experiment(tmp_path, NEURON)
        for n in range(50):
            pool.spawn(LaunchSpec(f"sim{n}", cold, "t", {}), lambda h, e: None)
        assert len(local.spawned) == 50 and len(pool._runs) == 1  # the last, just spawned
    finally:
        pool.close()
