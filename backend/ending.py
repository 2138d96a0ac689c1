"""How a run ended: the server's own report and its exit, classified.

One pure function, :func:`classify`, decides the system transition and the typed
error for every way a simulation server can end — reported in an event while it
still runs, written to ``status.json`` before it exited, or not at all (a crash, a
kill, a process lost across a restart). The supervisor only applies the verdict.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backend.launchers import Exit
from lifecycle import SimState

#: The system trigger that takes the backend's lifecycle to each reported end.
_TRIGGERS = {SimState.COMPLETED: "complete", SimState.STOPPED: "stop", SimState.FAILED: "fail"}


@dataclass(frozen=True)
class Ending:
    """The verdict: fire ``trigger`` (None: nothing ended yet) with ``error``."""

    trigger: str | None
    error: dict[str, Any] | None = None


def classify(reported: SimState | None, reported_error: dict[str, Any] | None,
             exit: Exit | None, *, had_process: bool = True, stderr_tail: str = "",
             stop_requested: bool = True, status_problem: str | None = None) -> Ending:
    """Decide how a simulation ended.

    A server that reports ``stopped`` nobody asked for was ended by a signal from
    outside (an admin's ``scancel``, a batch system's time limit): the verdict waits
    for its exit, and the launcher's word on it (``Exit.error_type``) makes it a
    failure; without one it stays a stop.

    Args:
        reported: the state the server reported last (event or ``status.json``).
        reported_error: the ``error`` it reported with a failure.
        exit: how its process ended; None while it is still alive.
        had_process: False when a restarted backend found no process to adopt.
        stderr_tail: the last lines of ``stderr.log``, for a crash's error.
        stop_requested: the backend asked the server to stop (or failed it).
        status_problem: what was wrong with its ``status.json``, for a crash's error.
    """
    trigger = _TRIGGERS.get(reported) if reported is not None else None
    if trigger == "fail":
        return Ending("fail", reported_error or {
            "type": "failed", "message": "the simulation server failed without saying why"})
    if trigger == "stop" and not stop_requested:
        if exit is None:
            return Ending(None)
        if exit.error_type:
            return Ending("fail", crash_error(exit, had_process=had_process,
                                              stderr_tail=stderr_tail,
                                              status_problem=status_problem))
    if trigger is not None:
        return Ending(trigger)
    if exit is None:
        return Ending(None)
    return Ending("fail", crash_error(exit, had_process=had_process, stderr_tail=stderr_tail,
                                      status_problem=status_problem))


def crash_error(exit: Exit, *, had_process: bool, stderr_tail: str,
                status_problem: str | None = None) -> dict[str, Any]:
    """The error of a server that ended without reporting an end."""
    if not had_process and exit.code is None and exit.signal is None and exit.reason is None:
        message = ("the simulation server is gone: the backend restarted and found no live "
                   "process and no final status")
    elif exit.reason:
        message = f"the simulation server was ended: {exit.reason}"
    else:
        message = f"the simulation server died unexpectedly ({exit.describe()})"
    error: dict[str, Any] = {"type": exit.error_type or "crashed", "message": message,
                             "exit_code": exit.code, "signal": exit.signal_name}
    if stderr_tail:
        error["stderr_tail"] = stderr_tail
    if status_problem:
        error["status_problem"] = status_problem
    return error


def exit_code(exit: Exit, reported: int | None) -> int | None:
    """The record's ``exit_code``: the OS's word (minus the signal number when killed),
    else what the server wrote down (an adopted process is not our child)."""
    if exit.signal is not None:
        return -exit.signal
    return exit.code if exit.code is not None else reported
