"""A run cannot fill the disk: its logs are cut to --max-log-bytes (head cut, tail
kept, a marker), its results held to --max-results-bytes (results_limit)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from backend.disk_limits import cap_log
from tests.support import Backend, assert_health_fast, loop_experiment, wait_until

MIB = 2**20

# ~200 MiB of stdout as fast as Python writes it, then wait for the test's "go"
# (a file in the experiment folder, the script's cwd), then the last lines.
SPEW = '''
import os, sys, time
chunk = ("x" * 1023 + "\\n") * 1024
for _ in range(200):
    sys.stdout.write(chunk)
sys.stdout.flush()
while not os.path.exists("go"):
    sim.run_loop(1)
    time.sleep(0.005)
for i in range(3):
    print(f"the last line {i}")
'''


def test_a_script_printing_200_mb_ends_with_a_capped_log_that_keeps_its_tail(
        make_backend: Callable[..., Backend]) -> None:
    backend = make_backend(args=("--max-log-bytes", str(MIB))).start()
    backend.upload("spew", loop_experiment(script=SPEW, sim_time=1e9))
    sim_id = backend.create("spew", state="started")["id"]
    run_dir = backend.data_dir / "runs" / sim_id
    log = run_dir / "logs" / "stdout.log"
    while not backend.status(sim_id)["sim_time"]:  # starting, then spewing
        # Not held up by the spew: a backend reading or cutting the log in the way would
        # take seconds. (Its warm pool starts meanwhile, four servers at its priority:
        # on two busy cores one answer took 155 ms.)
        assert_health_fast(backend, within=0.5, times=1)
    # Cut while the run lives: the disk never holds the 200 MiB for long.
    wait_until(lambda: (head := log.read_bytes()).startswith(b"[simbackend: ") and
               len(head) <= MIB, 10, "stdout.log to be cut to its cap")
    assert_health_fast(backend)
    (run_dir / "experiment" / "go").touch()
    record = backend.wait_state(sim_id, "completed")
    assert record["error"] is None                       # not killed for it
    backend.wait_run_dir_removed(sim_id)
    stored = backend.data_dir / "storage" / "simulations" / sim_id / "logs" / "stdout.log"
    assert stored.stat().st_size <= MIB
    response = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log")
    assert response.status_code == 200
    text = response.text
    assert len(text.encode()) <= MIB
    first, _, rest = text.partition("\n")
    cut = int(first.split()[1])
    assert first.endswith(f"over its cap of {MIB}]") and cut > 190 * MIB
    assert rest.endswith("the last line 0\nthe last line 1\nthe last line 2\n")
    assert rest.startswith("x" * 1023 + "\n")            # cut at a line's start


# The three files appear at once (a folder renamed into results/): the watchdog may look
# at any moment, and must see all of them or none.
RESULTS = '''
import os
os.mkdir("staged")
for name in ("a.bin", "b.bin", "c.bin"):
    with open(os.path.join("staged", name), "wb") as f:
        f.write(b"r" * 600 * 1024)
os.rename("staged", sim.results_dir / "out")
while True:
    sim.run_loop(1)
'''


def test_results_over_the_limit_fail_the_run_and_upload_within_it(
        make_backend: Callable[..., Backend]) -> None:
    backend = make_backend(args=("--max-results-bytes", str(MIB))).start()
    backend.upload("results", loop_experiment(script=RESULTS, sim_time=1e9))
    sim_id = backend.create("results", state="started")["id"]
    assert_health_fast(backend)
    record = backend.wait_state(sim_id, "failed")
    error = record["error"]
    assert error["type"] == "results_limit" and error["limit_bytes"] == MIB
    assert error["results_bytes"] == 3 * 600 * 1024
    assert "over the limit of 1.0 MiB" in error["message"]
    backend.wait_run_dir_removed(sim_id)
    listed = backend.get(f"/v1/simulations/{sim_id}/results").json()["results"]
    assert [item["name"] for item in listed] == ["out/a.bin"]
    stored = backend.data_dir / "storage" / "simulations" / sim_id / "record.json"
    left_out = json.loads(stored.read_text())["results_left_out"]
    assert left_out == {"count": 2, "bytes": 2 * 600 * 1024, "limit_bytes": MIB,
                        "files": ["out/b.bin", "out/c.bin"]}
    assert_health_fast(backend)


def test_cutting_again_counts_every_byte_cut_and_keeps_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(b"".join(b"line %06d\n" % i for i in range(10000)))   # 120000 bytes
    assert cap_log(log, 10000) > 0
    text = log.read_bytes()
    assert len(text) <= 10000 and text.endswith(b"line 009999\n")
    marker, _, kept = text.partition(b"\n")
    assert int(marker.split()[1]) == 120000 - len(kept)
    assert kept.startswith(b"line ")
    with open(log, "ab") as f:
        f.write(b"".join(b"more %06d\n" % i for i in range(1000)))
    cap_log(log, 10000)
    marker, _, kept = log.read_bytes().partition(b"\n")
    assert int(marker.split()[1]) == 132000 - len(kept)                   # in all
    assert kept.endswith(b"more 000999\n")
    assert cap_log(log, 10000) == 0                                       # under the cap


def test_a_cut_never_goes_through_a_link_nor_into_a_fifo(tmp_path: Path) -> None:
    """The script may swap a link to another file (the registry...) in for a log after
    the look that found a regular file: the cut must not reach it."""
    elsewhere = tmp_path / "registry"
    elsewhere.write_bytes(b"x" * 50_000)
    (tmp_path / "stdout.log").symlink_to(elsewhere)
    assert cap_log(tmp_path / "stdout.log", 10_000) == 0
    assert elsewhere.read_bytes() == b"x" * 50_000
    os.mkfifo(tmp_path / "stderr.log")
    assert cap_log(tmp_path / "stderr.log", 10_000) == 0
