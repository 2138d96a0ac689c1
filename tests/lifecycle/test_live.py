"""The live status in shared memory: what the writer publishes, the reader reads whole
or not at all."""
from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

from lifecycle import SimState
from lifecycle.live import _SEQ, _SEQ_AT, LIVE_FILE, LiveStatusWriter, read_live_status


def test_a_reader_sees_what_the_writer_published(tmp_path: Path) -> None:
    writer = LiveStatusWriter(tmp_path)
    writer.update(timestep=0.5, timeout=(100.0, None), running=(3.0, None),
                  state=SimState.PAUSED, ready=True)
    writer.stepped(42)
    assert read_live_status(tmp_path) == {
        "state": "paused", "sim_time": 21.0, "steps": 42, "timestep": 0.5,
        "real_time": 3.0, "timeout": {"sim_time": 100.0, "real_time": None}}
    assert (tmp_path / LIVE_FILE).stat().st_mode & 0o777 == 0o600


def test_running_time_counts_on_in_the_reader(tmp_path: Path) -> None:
    writer = LiveStatusWriter(tmp_path)
    writer.update(timestep=1.0, ready=True, running=(1.5, time.monotonic() - 2.0))
    assert read_live_status(tmp_path)["real_time"] >= 3.5


def test_a_server_still_starting_is_starting_without_asking_it(tmp_path: Path) -> None:
    """Until its kernel is built it reads as its control API would answer: created, at
    t = 0; once it has left created without being ready (failed, stopped, a NEST
    session) only the control API tells the rest."""
    writer = LiveStatusWriter(tmp_path)
    assert read_live_status(tmp_path) == {
        "state": "created", "sim_time": 0.0, "steps": 0, "timestep": None,
        "real_time": 0.0, "timeout": {}}
    for state in (SimState.FAILED, SimState.STOPPED, SimState.INITIALIZED):
        writer.update(state=state)
        assert read_live_status(tmp_path) is None


def test_nothing_to_read_means_ask_the_server(tmp_path: Path) -> None:
    assert read_live_status(tmp_path) is None  # no file
    (tmp_path / LIVE_FILE).write_bytes(b"not a live status")
    assert read_live_status(tmp_path) is None
    (tmp_path / LIVE_FILE).write_bytes(b"")
    assert read_live_status(tmp_path) is None


def test_a_write_cut_short_is_never_read(tmp_path: Path) -> None:
    writer = LiveStatusWriter(tmp_path)
    writer.update(timestep=1.0, ready=True)
    fd = os.open(tmp_path / LIVE_FILE, os.O_RDWR)
    try:  # a writer that died between its two sequence numbers
        os.pwrite(fd, _SEQ.pack(7), _SEQ_AT)
    finally:
        os.close(fd)
    assert read_live_status(tmp_path) is None


def test_a_new_server_in_the_same_run_dir_starts_afresh(tmp_path: Path) -> None:
    old = LiveStatusWriter(tmp_path)
    old.update(timestep=1.0, ready=True)
    old.stepped(500)
    LiveStatusWriter(tmp_path)  # a relaunch
    assert read_live_status(tmp_path)["steps"] == 0  # starting, not the old one's 500
    old.stepped(501)  # the old one's map is no longer the file's
    assert read_live_status(tmp_path)["steps"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [LIVE_FILE]


def test_readers_never_see_half_a_write(tmp_path: Path) -> None:
    """Two fields always written equal are read equal, while writes go on."""
    writer = LiveStatusWriter(tmp_path)
    writer.update(timestep=1.0, ready=True)
    done = threading.Event()

    def write() -> None:
        for k in range(20000):
            writer.update(timeout=(float(k), float(k)))
            writer.stepped(k)
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    reads = torn = 0
    last_steps = 0
    try:
        while not done.is_set() or reads == 0:
            status = read_live_status(tmp_path)
            if status is None:  # no whole copy within the reader's attempts
                torn += 1
                continue
            reads += 1
            timeout = status["timeout"]
            assert timeout["sim_time"] == timeout["real_time"]
            assert status["steps"] >= last_steps
            last_steps = status["steps"]
    finally:
        thread.join(30)
    assert reads > 0
    final = read_live_status(tmp_path)
    assert final["steps"] == 19999 and final["timeout"]["sim_time"] == 19999.0
    assert not math.isnan(final["real_time"])
