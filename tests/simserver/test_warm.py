"""A warm server's warm-up runs at a lower CPU priority only where it can take its own back."""
from __future__ import annotations

import os
import threading
import time

import pytest

from simserver import warm


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
