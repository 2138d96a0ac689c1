"""Run and wait: ``POST /v1/simulations?wait=`` answers once the run has ended."""
from __future__ import annotations

import time

import pytest

from tests.support import Backend, loop_experiment


def test_post_with_wait_answers_with_the_ended_record_and_its_results(backend: Backend) -> None:
    backend.upload("short", loop_experiment(sim_time=100.0))
    began = time.monotonic()
    response = backend.post("/v1/simulations?wait=30",
                            json={"experiment": "short", "state": "started"})
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["state"] == "completed", record
    assert time.monotonic() - began < 30
    assert {r["name"] for r in record["results"]} == {"count.txt"}
    assert response.headers["Location"] == f"/v1/simulations/{record['id']}"
    text = backend.get(f"/v1/simulations/{record['id']}/results/count.txt").text
    assert text == "100"


def test_a_wait_that_expires_answers_with_the_record_as_it_stands(
        backend: Backend, loop: str) -> None:
    began = time.monotonic()
    response = backend.post("/v1/simulations?wait=0.5",
                            json={"experiment": loop, "state": "started"})
    elapsed = time.monotonic() - began
    record = response.json()
    assert response.status_code == 201 and record["state"] in ("initialized", "started")
    assert "results" not in record
    assert 0.5 <= elapsed < 10
    assert backend.set_state(record["id"], "stopped").status_code == 200


def test_a_failing_run_answers_failed_with_its_error(backend: Backend) -> None:
    backend.upload("bad", loop_experiment(script="raise RuntimeError('no good')\n"))
    record = backend.post("/v1/simulations?wait=30",
                          json={"experiment": "bad", "state": "started"}).json()
    assert record["state"] == "failed" and record["error"]["type"] == "script_error"
    assert "no good" in record["error"]["message"]


@pytest.mark.parametrize("query,body", [
    ("wait=5", {"experiment": "loop"}),                       # nothing to wait for
    ("wait=5", {"experiment": "loop", "state": "initialized"}),
    ("wait=abc", {"experiment": "loop", "state": "started"}),
    ("wait=0", {"experiment": "loop", "state": "started"}),
    ("wait=-1", {"experiment": "loop", "state": "started"}),
    ("wait=100000", {"experiment": "loop", "state": "started"}),
    ("wait=nan", {"experiment": "loop", "state": "started"}),
    ("wait=%C2%B2", {"experiment": "loop", "state": "started"}),
])
def test_bad_waits_are_refused_and_create_nothing(backend: Backend, loop: str, query: str,
                                                  body: dict) -> None:
    response = backend.post(f"/v1/simulations?{query}", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_argument"
    assert backend.get("/v1/simulations").json()["simulations"] == []
