"""The pool's end of a real fork server (``python -m simserver --warm python --forks``):
forks, exit codes told as a Popen's, and what becomes of its forks when it dies."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from backend.launchers.environment import thread_defaults
from backend.launchers.forks import ForkServer
from backend.launchers.pool import is_fork_server, is_waiting
from lifecycle.messages import WARM_QUIET, WARM_READY
from simserver import forks
from tests.support import ROOT, alive, wait_until


@pytest.fixture
def forker() -> Iterator[ForkServer]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    popen = subprocess.Popen([sys.executable, "-m", "simserver", "--warm", "python",
                              "--pool", "unit", "--forks"], cwd=ROOT, stdin=theirs.fileno(),
                             start_new_session=True,
                             env={**os.environ, **thread_defaults(os.environ)})
    theirs.close()
    server = ForkServer("python", popen, ours)
    try:
        assert server.ready.wait(60), "the fork server did not get warm"
        yield server
    finally:
        server.close()
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def test_a_fork_is_a_warm_server_in_a_session_of_its_own(forker: ForkServer) -> None:
    child = forker.fork()
    try:
        assert child.stdout.readline() == WARM_READY
        assert os.getsid(child.pid) == child.pid == os.getpgid(child.pid)
        assert is_waiting(child.pid) and not is_fork_server(child.pid, [])
        assert is_fork_server(forker.pid, ["--warm", "python", "--forks"])
        assert child.poll() is None
        child.stdin.close()  # end of file, nothing handed: it leaves
        assert child.wait(10) == 0 and child.poll() == 0
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)


def private_and_shared_dirty(pid: int) -> tuple[int, int]:
    """kB of process ``pid``'s written pages it has to itself, and shares."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        fields = dict(line.split(":", 1) for line in rollup if ":" in line)
    return tuple(int(fields[key].split()[0]) for key in ("Private_Dirty", "Shared_Dirty"))


def test_a_fork_copies_its_pages_while_it_waits_and_stops_when_its_channel_speaks(
        forker: ForkServer) -> None:
    """A fork is warm at once and copies its fork server's pages while it waits, saying
    so once they are its own; one whose channel speaks first (a run, or as here the
    pool's end) stops copying and goes on."""
    waiting, ended = forker.fork(), forker.fork()
    try:
        ended.stdin.close()  # before it is warm: it has copied nothing when it looks
        assert ended.wait(10) == 0
        assert ended.stdout.read() == WARM_READY  # and no WARM_QUIET: it stopped
        assert waiting.stdout.readline() == WARM_READY
        assert waiting.stdout.readline() == WARM_QUIET
        own, shared = private_and_shared_dirty(waiting.pid)
        assert own > 10 * shared, (own, shared)  # its written pages are its own now
        waiting.stdin.close()
        assert waiting.wait(10) == 0
    finally:
        for child in (waiting, ended):
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)


def test_exit_codes_are_told_as_a_popens(forker: ForkServer) -> None:
    children = [forker.fork() for _ in range(3)]
    for child in children:
        assert child.stdout.readline() == WARM_READY
    os.kill(children[0].pid, signal.SIGKILL)
    children[1].stdin.write(b"not a handoff")
    children[1].stdin.close()
    assert children[0].wait(10) == -signal.SIGKILL
    assert children[1].wait(10) == 2  # it says why on stderr, as a warm server does
    with pytest.raises(subprocess.TimeoutExpired):
        children[2].wait(0.1)
    children[2].stdin.close()
    assert children[2].wait(10) == 0


def test_its_idle_forks_leave_with_it_and_their_end_is_known_unknown(
        forker: ForkServer) -> None:
    children = [forker.fork() for _ in range(2)]
    for child in children:
        assert child.stdout.readline() == WARM_READY
    os.kill(forker.pid, signal.SIGKILL)
    assert forker.gone.wait(10)
    for child in children:
        assert child.wait(20) is None  # nobody could tell its exit code
        assert child.poll() == -signal.SIGKILL  # how an idle fork leaves with it
        wait_until(lambda child=child: not alive(child.pid), 20, "the fork to be gone")
    with pytest.raises(OSError, match="gone"):
        forker.fork()


def test_a_kernel_that_cannot_populate_a_range_is_found_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The fork server does not fork where a fork could not own its pages at once (Linux
    < 5.14: its runs would copy them one fault at a time): it exits EXIT_CANNOT_FORK and
    the pool warms each server on its own."""
    assert forks.can_own_memory()  # this project's machines: Linux >= 5.14
    monkeypatch.setattr(forks, "_MADV_POPULATE_WRITE", 0x7FFF)  # what an old kernel refuses
    assert not forks.can_own_memory()
