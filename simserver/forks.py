"""A fork server of warm simulation servers:
``python -m simserver --warm KIND --pool KEY --forks``.

The pool starts one per kind beside its warm servers. It warms up once, as a warm
server does (:func:`simserver.warm.warm_up`), and then serves the pool on its stdin, a
Unix ``SOCK_SEQPACKET`` socket only the pool holds, one message a packet:

- ``ready``: it is warm (sent once);
- ``fork``, with two file descriptors, the read end of a pipe and the write end of
  another: it forks a process that becomes, from then on, a warm server waiting for its
  run exactly as one started with ``--warm`` (:func:`simserver.warm.serve_one_run`):
  in a session of its own, with the pipes as its stdin and stdout, warm at once. It
  answers ``forked PID``;
- ``exited PID CODE``: a process it forked has exited (``CODE`` as ``Popen.returncode``:
  negative for a signal), so the pool learns a run's exit code as from a child of its
  own;
- end of file: the pool is gone; it leaves. What it forked goes on: runs, and idle
  servers until the end of file on their own stdin.

A fork costs ~0.1 s of CPU (most of it copying its pages: :func:`own_memory`) where a
warm-up costs about a second (NEST, NumPy, matplotlib), so runs back to back no longer
wait for warm-ups; and it says it is warm right after the fork, copying its pages while
no run has come, so that a run coming meanwhile takes it instead of starting cold. The
fork server itself never runs any run's code: each process it forks serves one run and
exits, as a warm server started on its own does, and starts from the fork server's
state, which is that of a warm-up (NEST exercised on a throwaway network and reset).
What a fork shares that separate processes would not is put right in the child: NumPy's
global random generator is seeded anew (Python's ``random`` does so by itself). It forks
only while it is one thread: forking a process with other threads may leave their locks
held.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import select
import signal
import socket
import sys
import threading
import traceback
from typing import Any, Callable, NoReturn

from lifecycle.messages import WARM_QUIET
from simserver.warm import (
    die_with_parent, put_warm_up_out_of_collections, readable, serve_one_run, warm_up,
)

#: The messages of the protocol (see the module's documentation).
READY, FORK, FORKED, EXITED = b"ready", b"fork", b"forked", b"exited"
#: Exit code of a fork server that cannot fork well: it is not one thread, or the kernel
#: cannot give a fork its own pages at once (see :func:`own_memory`).
EXIT_CANNOT_FORK = 3


def serve_forks(kind: str) -> int:
    """Warm up, then fork warm servers of ``kind`` for the pool until it is gone."""
    die_with_parent(signal.SIGKILL)  # held (stopped) by the pool, it could not see it go
    channel = socket.socket(fileno=0)
    warm_up(kind)
    put_warm_up_out_of_collections(collect=True)
    threads = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["1"]
    if threading.active_count() > 1 or len(threads) > 1:
        print(f"simserver: the fork server has {len(threads)} threads after its warm-up; "
              f"it does not fork", file=sys.stderr, flush=True)
        return EXIT_CANNOT_FORK
    if not can_own_memory():
        print("simserver: this kernel cannot populate a fork's pages (MADV_POPULATE_WRITE, "
              "Linux >= 5.14): its runs would copy them one fault at a time; the fork "
              "server does not fork", file=sys.stderr, flush=True)
        return EXIT_CANNOT_FORK
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w)  # select wakes up when a child exits
    try:
        channel.send(READY)
        return _serve(channel, wake_r, wake_w)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the pool is gone


def _serve(channel: socket.socket, wake_r: int, wake_w: int) -> int:
    while True:
        readable = select.select([channel, wake_r], [], [])[0]
        if wake_r in readable:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
            _report_exits(channel)
        if channel not in readable:
            continue
        message, fds, _, _ = socket.recv_fds(channel, 64, 2)
        if not message:
            return 0
        if message != FORK or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            print(f"simserver: the fork server got {message[:40]!r} with {len(fds)} "
                  f"descriptors; ignored", file=sys.stderr, flush=True)
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            _become_warm_server(fds, channel, (wake_r, wake_w), parent)
        for fd in fds:
            os.close(fd)
        channel.send(b"%s %d" % (FORKED, pid))


#: ``madvise`` advice (Linux >= 5.14): fault every page of a range in, readable or
#: writable.
_MADV_POPULATE_READ, _MADV_POPULATE_WRITE = 22, 23
#: Bytes :func:`own_memory` populates between two looks at whether to stop: ~2 ms of
#: copying, a thousandth of which goes to the look.
_PIECE = 4 << 20


def _madvise() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc.madvise


def can_own_memory() -> bool:
    """Whether the kernel can populate a range writable at once (tried on a page of its
    own), as :func:`own_memory` needs."""
    page = mmap.mmap(-1, mmap.PAGESIZE)
    try:
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        return _madvise()(address, mmap.PAGESIZE, _MADV_POPULATE_WRITE) == 0
    except (OSError, AttributeError, TypeError):
        return False
    finally:
        try:
            page.close()
        except BufferError:
            pass  # a view of it is still alive: it goes with the process


def own_memory(stop: Callable[[], bool] = lambda: False) -> bool:
    """Give this (forked) process its own copy of every page it may write, and map
    every page of its code, in pieces of :data:`_PIECE` bytes, until ``stop()`` says
    to stop; whether it got through them all (the fork server forks only where the
    kernel can: :func:`can_own_memory`).

    A fork shares its fork server's pages until either writes to one: the run would
    then fault and copy them one by one as it goes (the Brunel example's build and first
    step: ~12,000 faults; 60-90 ms against 35 with its pages its own). Populating every
    private writable mapping (``MADV_POPULATE_WRITE``) copies them in one pass, ~80 ms
    of CPU for ~140 MB, against ~1 s of CPU for a warm-up of its own. A fork also starts
    without the page tables of its file mappings (code, constants: the kernel fills them
    on demand): ~250 more faults in the run; mapped now (``MADV_POPULATE_READ``), first
    steps through the backend were 0.973x and 0.990x those of servers warmed on their
    own (40 pairs, twice), against 1.042-1.121x without. The writable pages go first:
    they are most of the copy and most of the faults.

    A fork says it is warm before this (:func:`_become_warm_server`), and a run that
    comes meanwhile stops it: what is left is copied as the run touches it, still far
    sooner than a server started cold for want of a warm one.
    """
    madvise = _madvise()
    with open("/proc/self/maps") as maps:
        lines = maps.readlines()
    written: list[tuple[int, int]] = []  # copied (private, writable)
    mapped: list[tuple[int, int]] = []   # only mapped (code and constants: shared)
    for line in lines:
        fields = line.split()
        if len(fields) < 2 or not fields[1].startswith("r") or \
                (len(fields) > 5 and fields[5].startswith("[v")):  # [vvar], [vsyscall]
            continue
        start, end = (int(bound, 16) for bound in fields[0].split("-"))
        (written if fields[1] == "rw-p" else mapped).append((start, end))
    for ranges, advice in ((written, _MADV_POPULATE_WRITE), (mapped, _MADV_POPULATE_READ)):
        for start, end in ranges:
            for piece in range(start, end, _PIECE):
                if stop():
                    return False
                # A mapping the kernel will not populate (a device's) is left as it is.
                madvise(piece, min(_PIECE, end - piece), advice)
    return True


def _report_exits(channel: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        channel.send(b"%s %d %d" % (EXITED, pid, os.waitstatus_to_exitcode(status)))


def _copy_pages() -> None:
    """:func:`own_memory` until a run (or the pool's end) comes; say so if it got
    through."""
    if own_memory(stop=readable):
        os.write(1, WARM_QUIET)


def _become_warm_server(fds: list[int], channel: socket.socket, wake: tuple[int, int],
                        parent: int) -> NoReturn:
    """In the forked child: become a warm server on the two pipes; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # Idle, it leaves with the fork server (its exit would go untold); a run's server
        # clears this when handed its run.
        die_with_parent(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(0)  # the fork server died before this could be set
        os.setsid()
        channel.detach()  # fd 0, about to be the stdin pipe: not to be closed as a socket
        os.dup2(fds[0], 0)
        os.dup2(fds[1], 1)
        for fd in (*fds, *wake):
            os.close(fd)
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            numpy.random.seed()  # from the OS's entropy, as at a fresh import
        # Warm at once; its pages are copied while no run has come (see own_memory).
        code = serve_one_run(meanwhile=_copy_pages)
    except BaseException:  # noqa: BLE001 - a forked child must never return to the loop
        traceback.print_exc()
    finally:
        from simserver.__main__ import exit_now

        exit_now(code)
