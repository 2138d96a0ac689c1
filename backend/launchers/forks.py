"""The pool's end of a fork server (:mod:`simserver.forks`): warm servers in a few
milliseconds instead of a warm-up of their own.

A :class:`ForkServer` is one ``python -m simserver --warm KIND --forks`` process and
the socket to it; a thread of its own reads what it says. :meth:`ForkServer.fork` gives
a :class:`ForkedProcess`: what the pool and a run's handle use of a ``Popen`` (pid,
stdin, stdout, ``poll``, ``wait``), its exit code told by the fork server, whose child
it is. If the fork server dies first, what it forked is watched by pid, and an exit
code no one can tell any more is None (as for a server adopted after a restart).
"""
from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from typing import BinaryIO

import psutil

from simserver.forks import EXITED, FORK, FORKED, READY

logger = logging.getLogger(__name__)

#: Seconds a fork may take before the fork server is deemed stuck.
FORK_WAIT = 5.0
#: Seconds between two looks at a process whose fork server is gone.
_ORPHAN_POLL = 0.05


class ForkedProcess:
    """A warm server a fork server forked, as the pool uses a ``Popen``."""

    def __init__(self, pid: int, stdin: BinaryIO, stdout: BinaryIO) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        #: The exit code (negative: the signal), once told; None while it runs, or when
        #: no one could tell it (the fork server died before it).
        self.returncode: int | None = None
        self._ended = threading.Event()

    def poll(self) -> int | None:
        """None while it runs, else its exit code (as ``Popen.poll``). An exit no one
        could tell reads as SIGKILL's: that is how an idle one leaves with its fork
        server (the pool only polls idle ones; a run's handle waits, see :meth:`wait`)."""
        if not self._ended.is_set():
            return None
        return -signal.SIGKILL if self.returncode is None else self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, once ended; None when no one could tell it.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` s.
        """
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
        return self.returncode

    def end(self, code: int | None) -> None:
        if not self._ended.is_set():
            self.returncode = code
            self._ended.set()

    def watch_by_pid(self) -> None:
        """Its fork server is gone: wait for the process by pid (no exit code then). A
        zombie has ended: whoever adopted it may take a while to reap it."""
        def wait() -> None:
            try:
                proc = psutil.Process(self.pid)
                while proc.status() != psutil.STATUS_ZOMBIE:
                    time.sleep(_ORPHAN_POLL)
            except psutil.Error:
                pass
            self.end(None)

        threading.Thread(target=wait, name=f"orphan-{self.pid}", daemon=True).start()


class ForkServer:
    """One fork server of ``kind`` (spawned by the pool) and the socket to it."""

    def __init__(self, kind: str, popen: subprocess.Popen, channel: socket.socket) -> None:
        self.kind = kind
        self.popen = popen
        self.pid = popen.pid
        self.channel = channel
        self.ready = threading.Event()
        self.quiet = self.ready  # as the pool looks at a warm server: warm, it idles
        self.lowered = False  # by the pool, as a warm-up is (see WarmPool._lower)
        self.held = False     # stopped by the pool while a run starts (see WarmPool._hold)
        #: Set once it is gone (end of file on the socket).
        self.gone = threading.Event()
        self._forked: queue.Queue[int | None] = queue.Queue()
        self._children: dict[int, ForkedProcess] = {}
        #: Exits told before the child was registered (its fork's answer came first).
        self._early: dict[int, int] = {}
        self._lock = threading.Lock()
        self._fork_lock = threading.Lock()
        threading.Thread(target=self._read, name=f"forks-{kind}", daemon=True).start()

    def fork(self) -> ForkedProcess:
        """A new warm server, waiting for its run.

        Raises:
            OSError: the fork server is gone, or did not answer in :data:`FORK_WAIT` s.
        """
        with self._fork_lock:  # one at a time: each answer is that of the last request
            if self.gone.is_set():
                raise OSError("the fork server is gone")
            stdin_r, stdin_w = os.pipe()
            stdout_r, stdout_w = os.pipe()
            try:
                socket.send_fds(self.channel, [FORK], [stdin_r, stdout_w])
                try:
                    pid = self._forked.get(timeout=FORK_WAIT)
                except queue.Empty:  # stuck: its late answer would be taken for the next
                    self.close()
                    pid = None
            except OSError:
                os.close(stdin_w)
                os.close(stdout_r)
                raise
            finally:
                os.close(stdin_r)
                os.close(stdout_w)
            if pid is None:
                os.close(stdin_w)
                os.close(stdout_r)
                raise OSError("the fork server did not fork")
            child = ForkedProcess(pid, open(stdin_w, "wb"), open(stdout_r, "rb"))
            with self._lock:
                self._children[pid] = child
                code = self._early.pop(pid, None)
                orphaned = self.gone.is_set()
            if code is not None:
                child.end(code)
            elif orphaned:
                child.watch_by_pid()
            return child

    def close(self) -> None:
        """End of file for the fork server: it leaves (what it forked goes on)."""
        try:
            self.channel.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _read(self) -> None:
        try:
            while message := self.channel.recv(256):
                self._told(message)
        except OSError:
            pass
        finally:
            self._gone()

    def _told(self, message: bytes) -> None:
        word, *args = message.split()
        if word == READY:
            self.ready.set()
        elif word == FORKED and len(args) == 1:
            self._forked.put(int(args[0]))
        elif word == EXITED and len(args) == 2:
            pid, code = int(args[0]), int(args[1])
            with self._lock:
                child = self._children.pop(pid, None)
                if child is None:
                    self._early[pid] = code
            if child is not None:
                child.end(code)
        else:
            logger.warning("fork server %s (pid %d) said %r; ignored", self.kind, self.pid,
                           message[:80])

    def _gone(self) -> None:
        with self._lock:
            self.gone.set()
            children, self._children = list(self._children.values()), {}
        self._forked.put(None)
        for child in children:
            child.watch_by_pid()
        self.channel.close()
