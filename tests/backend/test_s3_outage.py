"""Nothing is lost while S3 is down: a dedicated moto server is frozen (SIGSTOP) under a
running simulation, so every request to it hangs, then thawed (SIGCONT)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.support import Backend, MotoServer, loop_experiment, wait_until

BUCKET = "outage"
# Fail a hanging request after ~1 s, twice; retry the upload from 0.2 s on (doubling).
FAST_FAILING = {"SIMBACKEND_STORAGE": f"s3://{BUCKET}/lab",
                "SIMBACKEND_STORAGE_CONNECT_TIMEOUT": "1",
                "SIMBACKEND_STORAGE_READ_TIMEOUT": "1", "SIMBACKEND_STORAGE_RETRIES": "1"}


def outage_backend(make_backend: Callable[..., Backend], moto: MotoServer) -> Backend:
    moto.client().create_bucket(Bucket=BUCKET)
    backend = make_backend(env={**moto.aws_env(), **FAST_FAILING}).start()
    assert backend.upload("loop", loop_experiment(sim_time=1e9)).status_code == 201
    return backend


def run_until_frozen(backend: Backend, moto: MotoServer) -> str:
    """Start a run, freeze S3 while it runs, let it end by its real-time timeout."""
    sim_id = backend.create("loop", params={"step_sleep": 0.001}, timeout={"real_time": 1.0},
                            state="started")["id"]
    backend.wait_advancing(sim_id, beyond=5)
    moto.freeze()
    assert backend.wait_state(sim_id, "completed", timeout=30)["error"] is None
    wait_for_failed_upload(backend, sim_id)
    return sim_id


def wait_for_failed_upload(backend: Backend, sim_id: str, times: int = 1) -> None:
    wait_until(lambda: backend.log().count(f"upload failed: sim {sim_id}:") >= times, 60,
               f"{times} failed upload(s) of {sim_id}")


def review(backend: Backend, sim_id: str) -> dict[str, Any]:
    """What the API shows of a run's logs and results."""
    base = f"/v1/simulations/{sim_id}"
    logs = {f["name"]: f["size"] for f in backend.get(f"{base}/logs").json()["logs"]}
    return {"logs": logs,
            "stdout": backend.get(f"{base}/logs/stdout.log").text,
            "tail": backend.get(f"{base}/logs/stdout.log", params={"offset": 7, "limit": 8}).text,
            "simulation": backend.get(f"{base}/logs/simulation.log").text,
            "count": backend.get(f"{base}/results/count.txt").text}


def assert_kept_locally(backend: Backend, sim_id: str) -> dict[str, Any]:
    """The run is over but not uploaded: its run dir stays and the API reads from it."""
    record = backend.record(sim_id)
    assert record["logs_uploaded"] is False
    run_dir = backend.data_dir / "runs" / sim_id
    assert (run_dir / "logs" / "stdout.log").is_file()
    began = time.monotonic()
    seen = review(backend, sim_id)
    assert time.monotonic() - began < 3, "reviewing local logs waited on the hanging S3"
    assert seen["tail"] == "starting" and "script ending" in seen["stdout"]
    assert "real-time timeout of 1 s" in seen["simulation"]
    assert int(seen["count"]) == record["status"]["steps"] > 0
    return seen


def test_a_frozen_s3_loses_nothing_and_the_upload_completes_after(
        make_backend: Callable[..., Backend], own_s3_server: MotoServer) -> None:
    backend = outage_backend(make_backend, own_s3_server)
    waiting = backend.create("loop")["id"]  # created while S3 answers; initialized while frozen
    sim_id = run_until_frozen(backend, own_s3_server)
    seen = assert_kept_locally(backend, sim_id)

    # Fetching fails the simulation with a storage error; requests needing S3 get a JSON 503.
    assert backend.set_state(waiting, "initialized").status_code == 200
    error = backend.wait_state(waiting, "failed", timeout=30)["error"]
    assert error["type"] == "storage_error"
    assert error["message"].startswith("could not fetch experiment 'loop': cannot reach S3")
    began = time.monotonic()
    listing = backend.get("/v1/experiments")
    assert listing.status_code == 503 and listing.json()["error"]["code"] == "storage_unavailable"
    assert time.monotonic() - began < 15  # the configured timeouts, not minutes
    ready = backend.get("/ready")
    assert ready.status_code == 503 and "cannot reach S3" in ready.json()["error"]["message"]
    # Deleting needs S3 too: refused (busy uploading, or S3 unavailable), nothing dropped.
    refused = backend.delete(f"/v1/simulations/{waiting}")
    assert (refused.status_code, refused.json()["error"]["code"]) in \
        {(409, "busy"), (503, "storage_unavailable")}
    wait_for_failed_upload(backend, sim_id, times=2)  # the retrier keeps trying
    assert backend.record(sim_id)["logs_uploaded"] is False

    own_s3_server.thaw()
    for sid in (sim_id, waiting):
        backend.wait_uploaded(sid, timeout=60)
        backend.wait_run_dir_removed(sid)
    assert review(backend, sim_id) == seen  # now read from S3
    assert backend.get("/ready").status_code == 200
    stored = own_s3_server.client().list_objects_v2(Bucket=BUCKET,
                                                    Prefix=f"lab/simulations/{sim_id}/")
    assert f"lab/simulations/{sim_id}/logs/stdout.log" in {o["Key"] for o in stored["Contents"]}


def test_uploads_resume_after_a_backend_restart_during_the_outage(
        make_backend: Callable[..., Backend], own_s3_server: MotoServer) -> None:
    backend = outage_backend(make_backend, own_s3_server)
    sim_id = run_until_frozen(backend, own_s3_server)
    seen = assert_kept_locally(backend, sim_id)

    backend.stop()  # SIGTERM while the upload is pending and S3 still hangs
    backend.http = type(backend.http)()
    failures_before = backend.log().count(f"upload failed: sim {sim_id}:")
    backend.start()
    assert "simbackend: storage is not usable: cannot reach S3" in backend.log()
    assert backend.get("/ready").status_code == 503
    assert assert_kept_locally(backend, sim_id) == seen
    wait_for_failed_upload(backend, sim_id, times=failures_before + 1)  # retried after the restart

    own_s3_server.thaw()
    record = backend.wait_uploaded(sim_id, timeout=60)
    assert record["state"] == "completed"
    backend.wait_run_dir_removed(sim_id)
    assert review(backend, sim_id) == seen
    assert backend.get("/ready").status_code == 200


def test_a_stop_leaves_a_hanging_upload_to_the_next_start(
        make_backend: Callable[..., Backend], own_s3_server: MotoServer) -> None:
    """With S3's default timeouts and retries a hanging upload fails after ~25 s; a stop
    waits 5 s for it, then ends, and the next start uploads the run all the same."""
    own_s3_server.client().create_bucket(Bucket=BUCKET)
    backend = make_backend(env={**own_s3_server.aws_env(),
                                "SIMBACKEND_STORAGE": f"s3://{BUCKET}/lab"}).start()
    assert backend.upload("loop", loop_experiment(sim_time=1e9)).status_code == 201
    sim_id = backend.create("loop", params={"step_sleep": 0.001}, timeout={"real_time": 1.0},
                            state="started")["id"]
    backend.wait_advancing(sim_id, beyond=5)
    own_s3_server.freeze()
    backend.wait_state(sim_id, "completed", timeout=30)
    wait_until(own_s3_server.unread_requests, 20, "the upload's request to wait at S3")
    seen = assert_kept_locally(backend, sim_id)

    began = time.monotonic()
    backend.stop()  # SIGTERM; SIGKILL after 10 s
    took = time.monotonic() - began
    # Ended by itself (else SIGKILL: -9) within those 10 s, not after boto3's ~25.
    assert backend.proc.returncode == 0, "the backend did not end by itself"
    assert took > 4.5, f"the upload in flight was not given its 5 s ({took:.1f} s)"
    log = backend.log()
    assert f"the upload of {sim_id} did not end within 5 s" in log
    assert log.rstrip().endswith("backend: stopped")

    backend.http = type(backend.http)()
    backend.start()
    own_s3_server.thaw()
    assert backend.wait_uploaded(sim_id, timeout=60)["state"] == "completed"
    backend.wait_run_dir_removed(sim_id)
    assert review(backend, sim_id) == seen
