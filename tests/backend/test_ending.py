"""How a run ended, classified: every combination of report and exit, as a table."""
from __future__ import annotations

import signal

import pytest

from backend.ending import Ending, classify, exit_code
from backend.launchers import Exit
from lifecycle import SimState

BOOM = {"type": "script_error", "message": "ValueError: boom"}
KILLED = Exit(None, signal.SIGKILL)
UNKNOWN = Exit(None, None)


@pytest.mark.parametrize("reported,error,exit,trigger,error_type", [
    # The server reported its end (in an event while alive, or in status.json).
    (SimState.COMPLETED, None, None, "complete", None),
    (SimState.COMPLETED, None, Exit(0, None), "complete", None),
    (SimState.STOPPED, None, Exit(0, None), "stop", None),
    (SimState.STOPPED, None, KILLED, "stop", None),         # killed after it stopped
    (SimState.FAILED, BOOM, None, "fail", "script_error"),
    (SimState.FAILED, BOOM, Exit(3, None), "fail", "script_error"),
    (SimState.FAILED, None, Exit(3, None), "fail", "failed"),  # failed, said nothing
    # Still running: nothing to decide.
    (None, None, None, None, None),
    (SimState.STARTED, None, None, None, None),
    (SimState.PAUSED, None, None, None, None),
    # Gone without reporting an end: a crash.
    (SimState.STARTED, None, KILLED, "fail", "crashed"),
    (SimState.INITIALIZED, None, Exit(1, None), "fail", "crashed"),
    (None, None, Exit(0, None), "fail", "crashed"),
    (None, None, UNKNOWN, "fail", "crashed"),
    # A launcher that knows why (a batch system) gives its own type.
    (SimState.STARTED, None, Exit(None, signal.SIGKILL, "job exceeded its memory", "oom"),
     "fail", "oom"),
])
def test_classify(reported, error, exit, trigger, error_type) -> None:
    ending = classify(reported, error, exit)
    assert ending.trigger == trigger
    assert (ending.error or {}).get("type") == error_type


def test_a_crash_says_how_and_carries_the_stderr_tail() -> None:
    ending = classify(SimState.STARTED, None, KILLED, stderr_tail="Segmentation fault")
    assert ending == Ending("fail", {
        "type": "crashed", "message": "the simulation server died unexpectedly (killed by SIGKILL)",
        "exit_code": None, "signal": "SIGKILL", "stderr_tail": "Segmentation fault"})


def test_a_server_lost_across_a_restart_is_named_so() -> None:
    error = classify(None, None, UNKNOWN, had_process=False).error
    assert "the backend restarted and found no live process" in error["message"]
    assert "died unexpectedly" in classify(None, None, UNKNOWN).error["message"]


def test_a_launchers_reason_is_the_message() -> None:
    error = classify(None, None, Exit(None, 9, "cancelled by an administrator", "cancelled"),
                     had_process=False).error
    assert error["type"] == "cancelled"
    assert error["message"] == "the simulation server was ended: cancelled by an administrator"


@pytest.mark.parametrize("exit,reported,code", [
    (Exit(0, None), None, 0), (Exit(3, None), 0, 3), (KILLED, 0, -9),
    (UNKNOWN, 3, 3), (UNKNOWN, None, None),
])
def test_exit_code(exit: Exit, reported, code) -> None:
    assert exit_code(exit, reported) == code


CANCELLED = Exit(0, None, "Slurm cancelled job 7 (scancel by its owner or an admin)",
                 "slurm_cancelled")


@pytest.mark.parametrize("exit, trigger, error_type", [
    (None, None, None),                           # wait for the exit and the launcher's word
    (Exit(0, None), "stop", None),                # a plain SIGTERM: a stop, as before
    (CANCELLED, "fail", "slurm_cancelled"),       # ended from outside: a failure, and why
])
def test_a_stop_nobody_asked_for_waits_for_the_launchers_verdict(exit, trigger,
                                                                  error_type) -> None:
    ending = classify(SimState.STOPPED, None, exit, stop_requested=False)
    assert ending.trigger == trigger
    assert (ending.error or {}).get("type") == error_type
    if error_type:
        assert "scancel by its owner or an admin" in ending.error["message"]


def test_a_stop_the_backend_asked_for_stays_a_stop_whatever_the_launcher_says() -> None:
    assert classify(SimState.STOPPED, None, CANCELLED, stop_requested=True).trigger == "stop"
    assert classify(SimState.STOPPED, None, None, stop_requested=True).trigger == "stop"
