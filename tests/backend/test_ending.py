"""How a run ended, classified: every combination of report and exit, as a table."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from backend.ending import Ending, classify, exit_code
from backend.launchers import Exit, file_tail
from backend.launchers.base import read_server_info
from backend.status import final_status
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


# -- final_status: status.json as input ------------------------------------------------


def test_final_status_takes_what_the_server_writes(tmp_path: Path) -> None:
    written = {"state": "completed", "sim_time": 100.0, "steps": 100, "timestep": 1.0,
               "real_time": 0.25, "timeout": {"sim_time": 100.0, "real_time": None},
               "error": None, "exit_code": 0,
               "usage": {"cpu_seconds": 0.2, "max_rss_bytes": 40_000_000},
               "pid": 7, "updated_at": 1.0}
    (tmp_path / "status.json").write_text(json.dumps(written))
    found, problem = final_status(tmp_path)
    assert problem is None
    assert found == {k: v for k, v in written.items() if k not in ("pid", "updated_at")}
    assert final_status(tmp_path / "nowhere") == ({}, None)


@pytest.mark.parametrize("field, value", [
    ("state", "exploded"), ("state", 3), ("state", [1]), ("exit_code", True),
    ("exit_code", 1.5), ("exit_code", 10 ** 30), ("sim_time", 10 ** 400),
    ("error", "boom"), ("error", {"type": "x"}), ("sim_time", "lots"), ("steps", -1),
    ("steps", 2.5), ("timestep", [1]), ("real_time", None),
    ("timeout", {"sim_time": "x"}), ("timeout", {"wall": 1}), ("usage", [1]),
    ("usage", {"cpu_seconds": 1.0, "max_rss_bytes": -5}),
    ("usage", {"cpu_seconds": 1.0, "max_rss_bytes": 5, "junk": "x" * 1000}),
])
def test_final_status_drops_a_field_of_the_wrong_shape(tmp_path: Path, field: str,
                                                       value: object) -> None:
    (tmp_path / "status.json").write_text(json.dumps({"state": "started", "steps": 3,
                                                      field: value}))
    found, problem = final_status(tmp_path)
    assert problem == f"status.json: fields of the wrong shape ignored: {field}"
    assert found == {k: v for k, v in {"state": "started", "steps": 3}.items() if k != field}


@pytest.mark.parametrize("text, problem", [
    ("{", "status.json is not JSON"), ('"started"', "status.json is not a JSON object"),
    ('{"sim_time": NaN}', "status.json: fields of the wrong shape ignored: sim_time"),
    ('{"pad": "' + "x" * 300_000 + '"}', "status.json is over 256 KiB"),
])
def test_final_status_says_what_is_wrong(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "status.json").write_text(text)
    assert final_status(tmp_path) == ({}, problem)


def test_final_status_never_waits_on_a_fifo_nor_follows_a_link(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "status.json")
    assert final_status(tmp_path) == ({}, "status.json is not a regular file")
    os.remove(tmp_path / "status.json")
    (tmp_path / "elsewhere.json").write_text('{"state": "completed"}')
    os.symlink(tmp_path / "elsewhere.json", tmp_path / "status.json")
    assert final_status(tmp_path) == ({}, "status.json is not a regular file")
    os.mkfifo(tmp_path / "stderr.log")
    assert file_tail(tmp_path / "stderr.log", 5) == ""
    os.mkfifo(tmp_path / "server.json")
    assert read_server_info(tmp_path) is None
