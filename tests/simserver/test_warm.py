"""A warm server's warm-up runs at a lower CPU priority only where it can take its own back,
and cuts its optional steps short once something waits on its channel."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from lifecycle.messages import WARM_READY
from simserver import warm
from tests.support import ROOT


def priority(tid: int = 0) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


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
        if warm._may_raise_priority(before):
            assert lowered == in_thread == min(19, before + warm.WARM_UP_NICE)
        else:
            assert lowered == in_thread == before
    finally:
        done.set()
        thread.join()


def test_where_it_could_not_be_raised_back_it_is_not_lowered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm, "_may_raise_priority", lambda original: False)
    before = priority()
    with warm.lowered_priority():
        assert priority() == before
        time.sleep(0)
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
