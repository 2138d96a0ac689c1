"""A warm server's warm-up runs at a lower CPU priority only where it can take its own back,
and cuts its optional steps short once something waits on its channel."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from lifecycle.messages import WARM_READY
from simserver import warm
from tests.support import ROOT


def priority(tid: int = 0) -> tuple[int, int]:
    """A thread's nice value and scheduling policy."""
    return os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid)


def may_lower() -> bool:
    return warm._may_raise_priority(os.getpriority(os.PRIO_PROCESS, 0),
                                    os.sched_getscheduler(0), os.sched_getparam(0))


def test_every_thread_gets_the_priority_back_after_the_warm_up() -> None:
    before = priority()
    started = threading.Event()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (started.set(), done.wait(5)))
    with warm.lowered_priority():
        lowered = priority()
        thread.start()
        started.wait(5)
        in_thread = priority(thread.native_id)
    try:
        assert priority() == before and priority(thread.native_id) == before
        if may_lower():  # lower nice, and only the CPU time nothing else wants
            assert lowered == in_thread == (min(19, before[0] + warm.WARM_UP_NICE),
                                            os.SCHED_IDLE)
        else:
            assert lowered == in_thread == before
    finally:
        done.set()
        thread.join()


def test_a_run_waiting_keeps_or_gives_back_the_priority() -> None:
    """A server handed a run before it lowered its priority keeps it; one handed while
    it warms up gets it back at once (restore), not at the end of the warm-up."""
    before = priority()
    with warm.lowered_priority(unless=lambda: True) as restore:
        assert priority() == before
        restore()
    with warm.lowered_priority() as restore:
        if may_lower():
            assert priority() == (min(19, before[0] + warm.WARM_UP_NICE), os.SCHED_IDLE)
        restore()
        assert priority() == before
        restore()  # once is enough; again changes nothing
    assert priority() == before


def test_a_run_handed_while_it_lowers_the_priority_gets_it_back_at_once() -> None:
    """Handed between the look and the lowering (the pool raised the priority just
    before the lowering undid that): the look after the lowering gives it back."""
    looks = iter([False, True])
    before = priority()
    with warm.lowered_priority(unless=lambda: next(looks)):
        assert priority() == before
    assert next(looks, None) is None  # looked twice: before and after the lowering


def test_where_it_could_not_be_raised_back_it_is_not_lowered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm, "_may_raise_priority", lambda *args: False)
    before = priority()
    with warm.lowered_priority():
        assert priority() == before
    assert priority() == before


def test_the_optional_steps_are_skipped_once_the_channel_is_written() -> None:
    """Exercising NEST and importing matplotlib only speed up a later run: a run waiting
    (here, the channel's end: the pool closed) skips them; what a run needs is imported."""
    agg = "'matplotlib.backends.backend_agg' in sys.modules"  # NEST imports matplotlib's core
    code = ("import sys; from simserver import warm; "
            f"print(warm.warm_up('nest', lambda: True), {agg})")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "['exercise_nest', 'import_matplotlib'] False"
    code = ("import sys; from simserver import warm; "
            f"print(warm.warm_up('nest'), {agg}, 'nest' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.split("\n")[0] == "[] True True", done.stderr


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
