"""The queue end to end: runs beyond the host's capacity wait, by priority, fair share
and first come; operators move and cancel them; a kill -9 keeps every one in its place
and starts none twice."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Callable

import requests

from tests.support import Backend, loop_experiment, wait_until

SLOW = {"step_sleep": 0.002}

#: Appends its name to the marker file at its first step: once per real start.
MARKED = '''
import time
sim.run_loop(1)
with open(sim.params["marker"], "a") as f:
    f.write(sim.params["name"] + "\\n")
try:
    while True:
        sim.run_loop(1)
        time.sleep(0.002)
except SimulationTimeout:
    pass
'''

OWNERS = ("alice", "bob", "carol")
PRIORITIES = [0, 0, 5, 0, -1, 5, 0, 10, 0, 0, -1, 5, 0, 0, 0, 10, 0, -1, 0, 0]


def queue_ids(backend: Backend) -> list[str]:
    return [e["id"] for e in backend.get("/v1/queue").json()["queue"]]


def reasons(backend: Backend) -> dict[str, str]:
    return {e["id"]: e["reason"] for e in backend.get("/v1/queue").json()["queue"]}


def restart(backend: Backend) -> None:
    backend.http = requests.Session()
    backend.start()


def test_twenty_queued_start_in_order_once_each_through_cancel_move_and_kill9(
        make_backend: Callable[..., Backend], tmp_path: Path) -> None:
    backend = make_backend(args=("--host-threads", "1")).start()
    backend.upload("marked", loop_experiment(script=MARKED, sim_time=1e9))
    marker = tmp_path / "starts.log"

    def started() -> list[str]:
        return marker.read_text().split() if marker.exists() else []

    def create(name: str, **fields: Any) -> dict[str, Any]:
        return backend.create("marked", id=name, state="started",
                              params={"marker": str(marker), "name": name}, **fields)

    create("filler")
    wait_until(lambda: started() == ["filler"], 20, "the filler to start")
    spec = [(f"q{i:02d}", OWNERS[i % 3], p) for i, p in enumerate(PRIORITIES)]
    for name, owner, priority in spec:
        record = create(name, owner=owner, priority=priority)
        assert record["state"] == "queued" and record["queue"]["position"] is not None
        assert (record["owner"], record["priority"], record["threads"]) == (owner, priority, 1)
    by_rank = sorted(range(20), key=lambda i: (-PRIORITIES[i], i))
    assert queue_ids(backend) == [spec[i][0] for i in by_rank]
    assert backend.record("q07")["queue"] == {"position": 0, "reason": "waiting for 1 core"}
    assert backend.record("q00")["queue"]["reason"] == "behind q07 (waiting for 1 core)"

    # Cancel two (both ways), move one to the front, raise one into the 5s.
    assert backend.delete("/v1/queue/q03").status_code == 204
    assert backend.set_state("q08", "stopped").json() == {"state": "stopped"}
    moved = backend.put("/v1/queue/q19", json={"position": 0})
    assert moved.status_code == 200 and moved.json()["position"] == 0, moved.text
    raised = backend.put("/v1/queue/q04", json={"priority": 5}).json()
    assert raised["priority"] == 5
    expected = ["q19", "q07", "q15", "q02", "q04", "q05", "q11", "q00", "q01", "q06", "q09",
                "q12", "q13", "q14", "q16", "q18", "q10", "q17"]
    assert queue_ids(backend) == expected
    assert backend.record("q19")["priority"] == 10  # it took its new neighbour's
    assert backend.record("q03")["state"] == backend.record("q08")["state"] == "stopped"
    assert backend.record("q03")["queue"] is None

    running = "filler"
    for k, name in enumerate(expected):
        assert backend.set_state(running, "stopped").status_code == 200
        if k == 8:  # the next one is being admitted and launched: kill -9 right now
            backend.kill9()
            restart(backend)
        wait_until(lambda k=k: len(started()) >= k + 2, 30, f"start number {k + 2}")
        assert started()[-1] == name, started()
        if k == 8:
            assert queue_ids(backend) == expected[k + 1:]  # every one kept its place
        running = name
    assert started() == ["filler", *expected]  # each started once, none twice
    assert backend.record(running)["state"] == "started"
    backend.set_state(running, "stopped")
    assert backend.get("/v1/queue").json()["queue"] == []
    for name in ("q03", "q08", *expected):
        assert backend.wait_uploaded(name)["state"] == "stopped"


def test_fair_share_cores_and_pausing_keeps_the_slot(
        make_backend: Callable[..., Backend]) -> None:
    backend = make_backend(args=("--host-threads", "4", "--max-running-per-owner", "2")).start()
    backend.upload("loop", loop_experiment(sim_time=1e9))

    def create(owner: str, **fields: Any) -> str:
        return backend.create("loop", owner=owner, params=SLOW, state="started", **fields)["id"]

    alice = [create("alice") for _ in range(4)]
    bob = [create("bob") for _ in range(2)]       # not held back by alice's queued runs
    carol = create("carol")
    big = create("dave", resources={"threads": 3})
    states = {s: backend.record(s)["state"] for s in alice + bob + [carol, big]}
    assert [states[s] for s in alice] == ["started", "started", "queued", "queued"]
    assert [states[s] for s in bob] == ["started", "started"]
    assert queue_ids(backend) == [alice[2], alice[3], carol, big]
    cap = "owner alice has 2 running (the per-owner cap)"
    assert reasons(backend) == {alice[2]: cap, alice[3]: cap, carol: "waiting for 1 core",
                                big: f"behind {carol} (waiting for 1 core)"}
    view = backend.get("/v1/queue").json()
    assert view["free"]["threads"] == 0 and view["capacity"]["threads"] == 4
    assert sorted(r["id"] for r in view["running"]) == sorted(alice[:2] + bob)

    # A paused run keeps its slot; a stopped one gives it to the next in line at once.
    backend.set_state(bob[0], "paused")
    backend.wait_server_state(bob[0], "paused")
    assert backend.record(carol)["state"] == "queued"
    backend.set_state(bob[0], "stopped")
    backend.wait_state(carol, "started")
    assert reasons(backend)[big] == "waiting for 3 cores"
    assert backend.record(alice[2])["state"] == "queued"

    backend.set_state(alice[0], "stopped")          # alice is under her cap again
    backend.wait_state(alice[2], "started")
    for sim in (bob[1], carol):
        backend.set_state(sim, "stopped")
    wait_until(lambda: reasons(backend).get(big) == "waiting for 1 core", 10, "2 free cores")
    assert reasons(backend)[alice[3]] == cap        # waits for alice, not for cores
    backend.set_state(alice[1], "stopped")          # first come: alice's before the big one
    backend.wait_state(alice[3], "started")
    assert backend.record(big)["state"] == "queued"
    backend.set_state(alice[2], "stopped")
    backend.wait_state(big, "started")
    assert backend.get("/v1/queue").json()["running"][-1]["threads"] == 3
    for sim in (alice[3], big):
        backend.set_state(sim, "stopped")
    for sim in alice + bob + [carol, big]:
        backend.wait_uploaded(sim)


def test_bad_queue_requests_are_refused_and_change_nothing(
        make_backend: Callable[..., Backend]) -> None:
    backend = make_backend(args=("--host-threads", "1")).start()
    backend.upload("loop", loop_experiment(sim_time=1e9))
    running = backend.create("loop", params=SLOW, state="started")["id"]
    waiting = backend.create("loop", params=SLOW, state="started")["id"]
    later = backend.create("loop", params=SLOW, state="initialized")["id"]
    assert backend.record(waiting)["state"] == backend.record(later)["state"] == "queued"
    before = backend.get("/v1/queue").json()["queue"]
    count = len(backend.get("/v1/simulations").json()["simulations"])

    def refused(response: requests.Response, status: int, code: str) -> None:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert backend.get("/v1/queue").json()["queue"] == before
        assert len(backend.get("/v1/simulations").json()["simulations"]) == count

    refused(backend.set_state(waiting, "paused"), 409, "invalid_transition")
    for body in ({"position": "first"}, {"position": -1}, {"bogus": 1}, [], {},
                 {"position": True}):
        refused(backend.put(f"/v1/queue/{waiting}", json=body), 400,
                "invalid_position" if "position" in body else "invalid_queue_change")
    refused(backend.put(f"/v1/queue/{waiting}", json={"priority": 5000}), 400,
            "invalid_priority")
    refused(backend.put(f"/v1/queue/{running}", json={"position": 0}), 409, "not_queued")
    refused(backend.get(f"/v1/queue/{running}"), 409, "not_queued")
    refused(backend.delete(f"/v1/queue/{running}"), 409, "not_queued")
    refused(backend.put("/v1/queue/nope", json={"position": 0}), 404, "simulation_not_found")
    for fields, code in (({"priority": "high"}, "invalid_priority"),
                         ({"priority": 1.5}, "invalid_priority"),
                         ({"resources": {"threads": 0}}, "invalid_resources"),
                         ({"resources": {"cores": 1}}, "invalid_resources"),
                         ({"owner": ""}, "invalid_owner")):
        refused(backend.post("/v1/simulations", json={"experiment": "loop", **fields}), 400,
                code)
    refused(backend.post("/v1/simulations", json={
        "experiment": "loop", "state": "started", "resources": {"threads": 2}}), 409,
        "exceeds_host")
    assert backend.record(running)["state"] == "started"

    # Asking a queued run again is accepted: it is queued already (and may change
    # what it will be admitted to).
    assert backend.set_state(waiting, "started").json() == {"state": "queued"}
    assert backend.set_state(later, "started").json() == {"state": "queued"}
    assert backend.get(f"/v1/queue/{later}").json()["target"] == "started"
    assert backend.get(f"/v1/queue/{waiting}").json()["position"] == 0
    backend.set_state(running, "stopped")
    backend.wait_state(waiting, "started")
    backend.set_state(waiting, "stopped")
    backend.wait_state(later, "started")
    backend.set_state(later, "stopped")
    for sim in (running, waiting, later):
        backend.wait_uploaded(sim)


def test_an_admission_cut_between_initialized_and_started_starts_after_a_restart(
        make_backend: Callable[..., Backend], tmp_path: Path) -> None:
    """Admitting a run asked to start saves ``initialized``, then ``started``, then
    removes its queue row: a kill -9 between the first two saves leaves the record
    ``initialized`` and the row asking for ``started``, and the start must not be lost."""
    backend = make_backend(args=("--host-threads", "1")).start()
    backend.upload("marked", loop_experiment(script=MARKED, sim_time=1e9))
    marker = tmp_path / "starts.log"
    for name in ("filler", "cut"):
        backend.create("marked", id=name, state="started",
                       params={"marker": str(marker), "name": name})
    wait_until(lambda: marker.exists() and marker.read_text().split() == ["filler"], 20,
               "the filler to start")
    assert backend.record("cut")["state"] == "queued"
    backend.kill9()
    # What the registry holds after a kill -9 between the admission's two saves.
    db = sqlite3.connect(backend.data_dir / "simbackend.sqlite3")
    try:
        (text,) = db.execute("SELECT record FROM simulations WHERE id = 'cut'").fetchone()
        record = {**json.loads(text), "state": "initialized"}
        with db:
            db.execute("UPDATE simulations SET state = 'initialized', record = ? "
                       "WHERE id = 'cut'", (json.dumps(record),))
        assert db.execute("SELECT target FROM queue WHERE id = 'cut'").fetchone() == \
            ("started",)
    finally:
        db.close()
    restart(backend)
    wait_until(lambda: "cut" in marker.read_text().split(), 30, "the cut run to start")
    assert backend.record("cut")["state"] == "started"
    assert queue_ids(backend) == []
    for name in ("filler", "cut"):
        assert backend.set_state(name, "stopped").status_code == 200
    assert marker.read_text().split() == ["filler", "cut"]
