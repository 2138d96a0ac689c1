"""The local launcher: the OS calls it makes (recorded), and the real processes it runs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from backend.launchers import Exit, LaunchSpec, LocalLauncher, ProcessOps, ServerHandle
from backend.launchers.local import LocalServer, ProcessTable
from lifecycle.messages import EXPERIMENT_DIR, LOGS_DIR, SERVER_FILE, STDOUT_LOG
from storage import write_json_atomic
from tests.support import wait_until


class RecordingOps(ProcessOps):
    """Real processes, but every signal the launcher sends is written down."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.spawned: list[subprocess.Popen] = []

    def spawn(self, argv, **kwargs):  # type: ignore[override]
        # A stand-in for the simulation server that ignores SIGTERM, so escalation shows.
        popen = super().spawn([sys.executable, "-c", "import signal, time\n"
                               "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                               "print('ready', flush=True)\n"
                               "time.sleep(60)"], **kwargs)
        self.calls.append(("spawn", tuple(argv)))
        self.spawned.append(popen)
        return popen

    def signal_group(self, pgid: int, sig: int) -> None:
        self.calls.append(("group", pgid, signal.Signals(sig).name))
        super().signal_group(pgid, sig)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    for sub in (EXPERIMENT_DIR, LOGS_DIR):
        (tmp_path / "runs" / "s1" / sub).mkdir(parents=True)
    return tmp_path / "runs" / "s1"


@pytest.fixture
def ops() -> RecordingOps:
    ops = RecordingOps()
    yield ops
    for popen in ops.spawned:
        if popen.poll() is None:
            popen.kill()
            popen.wait()


def spawn(launcher: LocalLauncher, run_dir: Path, exits: list) -> LocalServer:
    spec = LaunchSpec("s1", run_dir, "secret-token", {})
    return launcher.spawn(spec, on_exit=lambda handle, exit: exits.append((handle, exit)))


def test_spawn_runs_the_simserver_in_its_own_session_without_the_token_on_argv(
        ops: RecordingOps, run_dir: Path) -> None:
    exits: list = []
    server = spawn(LocalLauncher(ops), run_dir, exits)
    (kind, argv), = ops.calls
    assert argv[1:] == ("-m", "simserver", "--run-dir", str(run_dir))
    assert "secret-token" not in " ".join(argv)
    assert psutil.Process(server.pid).cwd() == str(run_dir / EXPERIMENT_DIR)
    assert os.getpgid(server.pid) == server.pid          # its own process group
    assert server.describe() == f"pid {server.pid}"


def test_terminate_escalates_from_sigterm_to_sigkill_after_the_grace(
        ops: RecordingOps, run_dir: Path) -> None:
    exits: list = []
    launcher = LocalLauncher(ops)
    server = spawn(launcher, run_dir, exits)
    stdout = run_dir / LOGS_DIR / STDOUT_LOG
    wait_until(lambda: stdout.exists() and "ready" in stdout.read_text(), 10,
               "the child to ignore SIGTERM")
    launcher.terminate(server, grace=0.3)
    assert [c for c in ops.calls if c[0] == "group"] == [
        ("group", server.pid, "SIGTERM"), ("group", server.pid, "SIGKILL")]
    wait_until(lambda: exits, 5, "the exit callback")
    (handle, exit), = exits
    assert handle is server and exit == Exit(None, signal.SIGKILL) and server.exited.is_set()


def test_adopt_checks_the_process_is_the_one_recorded(ops: RecordingOps, run_dir: Path) -> None:
    launcher = LocalLauncher(ops)
    server = spawn(launcher, run_dir, [])
    info = {"pid": server.pid, "create_time": psutil.Process(server.pid).create_time(),
            "host": "127.0.0.1", "port": 1, "token": "t"}
    write_json_atomic(run_dir / SERVER_FILE, info)
    adopted = launcher.adopt("s1", run_dir, lambda h, e: None)
    assert isinstance(adopted, ServerHandle) and adopted.describe() == server.describe()
    # A recycled pid (another start time) is not it.
    write_json_atomic(run_dir / SERVER_FILE, {**info, "create_time": info["create_time"] - 60})
    assert launcher.adopt("s1", run_dir, lambda h, e: None) is None
    (run_dir / SERVER_FILE).unlink()
    assert launcher.adopt("s1", run_dir, lambda h, e: None) is None


def test_the_exit_of_a_crashing_server_is_reported_once(run_dir: Path) -> None:
    class Crashing(ProcessOps):
        def spawn(self, argv, **kwargs):  # type: ignore[override]
            return super().spawn([sys.executable, "-c", "import os; os.abort()"], **kwargs)

    exits: list = []
    done = threading.Event()
    spec = LaunchSpec("s1", run_dir, "t", {})
    LocalLauncher(Crashing()).spawn(spec, on_exit=lambda h, e: (exits.append(e), done.set()))
    assert done.wait(10)
    assert exits == [Exit(None, signal.SIGABRT)]


def test_the_process_table_finds_descendants_and_is_read_once_per_ttl() -> None:
    """The watchdog's view of who is whose child: the whole tree below a pid, from one
    scan of /proc shared by every run until it is ``ttl`` old."""
    shell = subprocess.Popen(["sh", "-c", "sh -c 'sleep 30' & sleep 30"])
    try:
        def tree() -> set[int]:
            try:
                return {p.pid for p in psutil.Process(shell.pid).children(recursive=True)}
            except psutil.Error:
                return set()
        wait_until(lambda: len(tree()) >= 3, 10, "the shell's children and grandchild")
        table = ProcessTable(ttl=0.0)
        assert set(table.descendants(shell.pid)) == tree()
        assert table.descendants(2 ** 22 + 1) == []  # no such process: no children
        kept = ProcessTable(ttl=3600.0)
        kept.descendants(shell.pid)
        late = subprocess.Popen(["sleep", "30"])
        try:
            assert late.pid not in kept.descendants(os.getpid())  # the read is reused
            assert late.pid in ProcessTable(ttl=0.0).descendants(os.getpid())
        finally:
            late.kill()
            late.wait()
    finally:
        for proc in psutil.Process(shell.pid).children(recursive=True):
            proc.kill()
        shell.kill()
        shell.wait()


def test_a_child_gone_since_the_table_was_read_leaves_the_rest_measured(
        ops: RecordingOps, run_dir: Path) -> None:
    """The watchdog's table may be a second old: a process it names that has exited since
    is passed over, not the reason the run's other processes go unmeasured."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    other = subprocess.Popen(["sleep", "30"])

    class Read(ProcessTable):
        def descendants(self, pid: int) -> list[int]:
            return [gone.pid, other.pid]

    try:
        server = spawn(LocalLauncher(ops), run_dir, [])
        measured = {proc.pid for proc in server.tree(Read(ttl=1.0))}
        assert {server.pid, other.pid} <= measured and gone.pid not in measured
        assert server.resources()["rss_bytes"] > 0
    finally:
        other.kill()
        other.wait()
