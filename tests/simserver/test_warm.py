"""A warm server: the priority the pool gives it and takes back, the optional steps of its
warm-up cut short once something waits on its channel, what a run's end still imports."""
from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest

from lifecycle.messages import WARM_READY
from simserver import warm
from tests.support import ROOT, cpu_priority, python_c


def said(child: subprocess.Popen, timeout: float = 30.0) -> str:
    """The next line ``child`` prints ("" if none within ``timeout`` s)."""
    if not select.select([child.stdout], [], [], timeout)[0]:
        return ""
    return child.stdout.readline()


def test_a_process_lowered_to_a_warm_ups_priority_is_given_its_own_back() -> None:
    """Every thread of another process (here, one with a second thread waiting) drops
    to nice +10 and SCHED_IDLE, and a thread it starts then inherits that; raised back,
    every thread has the caller's priority again."""
    if not warm.may_raise_priority():
        pytest.skip("this process may not raise a priority back (no CAP_SYS_NICE)")
    code = ("import sys, threading\n"
            "stop = threading.Event()\n"
            "threading.Thread(target=stop.wait, daemon=True).start()\n"
            "print('ready', flush=True)\n"
            "sys.stdin.readline()\n"
            "threading.Thread(target=stop.wait, daemon=True).start()\n"
            "print('another', flush=True)\n"
            "sys.stdin.readline()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert said(child) == "ready\n"
        before = cpu_priority()
        warm.idle_priority(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert said(child) == "another\n"
        tasks = [int(t) for t in os.listdir(f"/proc/{child.pid}/task")]
        assert len(tasks) == 3
        idle = (min(19, before[0] + warm.WARM_UP_NICE), os.SCHED_IDLE)
        assert [cpu_priority(t) for t in tasks] == [idle] * 3
        warm.give_priority(child.pid, before[0], os.sched_getscheduler(0),
                           os.sched_getparam(0))
        assert [cpu_priority(t) for t in tasks] == [before] * 3
    finally:
        child.kill()
        child.wait()


def test_the_probe_leaves_the_callers_priority_as_it_was() -> None:
    before = cpu_priority()
    assert warm.may_raise_priority() in (True, False)
    assert cpu_priority() == before


def test_the_optional_steps_are_skipped_once_the_channel_is_written() -> None:
    """Exercising NEST and importing matplotlib only speed up a later run: a run waiting
    (here, the channel's end: the pool closed) skips them; what a run needs is imported."""
    agg = "'matplotlib.backends.backend_agg' in sys.modules"  # NEST imports matplotlib's core
    code = ("import sys; from simserver import warm; "
            f"print(warm.warm_up('nest', lambda: True), {agg})")
    done = python_c(code, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "['exercise_nest', 'import_matplotlib'] False"
    code = ("import sys; from simserver import warm; "
            f"print(warm.warm_up('nest'), {agg}, 'nest' in sys.modules)")
    done = python_c(code, timeout=120)
    assert done.stdout.split("\n")[0] == "[] True True", done.stderr


def test_what_the_warm_up_made_is_left_out_of_later_collections() -> None:
    """Its garbage is freed first (unless a run waits); what remains is frozen: a later
    full collection neither frees nor goes through it (in a process of its own: the
    freeze lasts the process)."""
    code = (
        "import gc, weakref\n"
        "from simserver import warm\n"
        "class Node: pass\n"
        "def cycle():\n"
        "    node = Node(); node.me = node\n"
        "    return weakref.ref(node)\n"
        "freed = cycle()\n"
        "warm.put_warm_up_out_of_collections(collect=True)\n"
        "frozen, tracked = gc.get_freeze_count(), len(gc.get_objects())\n"
        "kept = cycle()\n"
        "warm.put_warm_up_out_of_collections(collect=False)\n"
        "gc.collect()\n"
        "print(freed() is None, kept() is not None, frozen > 1000, tracked)\n")
    done = python_c(code, timeout=60)
    assert done.returncode == 0, done.stderr
    freed, kept, frozen, tracked = done.stdout.split()
    assert (freed, kept, frozen) == ("True", "True", "True")
    assert int(tracked) < 50  # left to collections right after: next to nothing


def test_a_warm_server_whose_channel_ends_while_it_warms_up_leaves_early() -> None:
    """The real ``--warm nest`` process, its stdin at end of file from the start: it says
    what it skipped, reports ready and leaves (nothing to run)."""
    done = subprocess.run([sys.executable, "-m", "simserver", "--warm", "nest"], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == WARM_READY
    assert b"skipped exercise_nest, import_matplotlib" in done.stderr


def test_what_a_warm_server_imported_is_all_saving_the_spikes_needs(tmp_path) -> None:
    """The save between the script's end and ``completed`` imports nothing (np.savez
    would import zipfile, ~1.5 ms, on a run's critical path)."""
    code = (
        "import sys, pathlib, numpy as np, simserver.server\n"
        "from simserver.spikes import save_spikes\n"
        "before = set(sys.modules)\n"
        "save_spikes({'ex': (np.arange(3.0), np.arange(3))}, pathlib.Path(sys.argv[1]))\n"
        "print(sorted(set(sys.modules) - before))\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout
    assert (tmp_path / "spikes.npz").stat().st_size > 0
