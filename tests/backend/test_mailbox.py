"""The mailbox: serial, ordered, thread only while there is work, calls with timeouts."""
from __future__ import annotations

import threading
from collections import deque

import pytest

from backend.mailbox import Mailbox, MailboxTimeout
from tests.support import wait_until


def test_calls_run_in_order_on_one_thread_at_a_time() -> None:
    box = Mailbox("test")
    seen, threads, active = [], set(), []
    lock = threading.Lock()

    def work(i: int) -> None:
        with lock:
            active.append(i)
            assert len(active) == 1, "two calls ran at once"
        seen.append(i)
        threads.add(threading.current_thread().name)
        with lock:
            active.remove(i)

    for i in range(200):
        box.post(work, i)
    assert box.sync(5)
    assert seen == list(range(200))
    assert threads == {"test"}


def test_the_thread_goes_when_idle_and_comes_back() -> None:
    box = Mailbox("idle-test", linger=0.05)
    box.post(lambda: None)
    assert box.sync(5)
    wait_until(lambda: not any(t.name == "idle-test" for t in threading.enumerate()), 5,
               "the mailbox thread to end")
    assert box.call(lambda: 42, timeout=5) == 42


def test_a_lingering_thread_takes_the_next_work() -> None:
    box = Mailbox("linger-test", linger=30.0)
    first = box.call(threading.get_ident, timeout=5)
    wait_until(lambda: box._calls == deque(), 5, "the mailbox to be idle")  # waiting for more
    assert box.call(threading.get_ident, timeout=5) == first


def test_call_returns_results_and_raises_errors() -> None:
    box = Mailbox("call-test")
    assert box.call(lambda a, b: a + b, 1, 2, timeout=5) == 3
    with pytest.raises(KeyError):
        box.call({}.__getitem__, "x", timeout=5)


def test_a_call_that_cannot_start_in_time_is_withdrawn() -> None:
    box = Mailbox("busy-test")
    release = threading.Event()
    ran = []
    box.post(release.wait)
    with pytest.raises(MailboxTimeout):
        box.call(ran.append, 1, timeout=0.1)
    release.set()
    assert box.sync(5)
    assert ran == [], "a withdrawn call ran anyway"


def test_a_failing_call_is_reported_and_the_mailbox_goes_on() -> None:
    errors = []
    box = Mailbox("error-test", on_error=lambda func, exc: errors.append(str(exc)))
    box.post(lambda: 1 / 0)
    assert box.call(lambda: "alive", timeout=5) == "alive"
    assert errors == ["division by zero"]


def test_call_from_the_mailbox_itself_runs_inline() -> None:
    box = Mailbox("inline-test")
    assert box.call(lambda: box.call(lambda: "inner", timeout=1), timeout=5) == "inner"
