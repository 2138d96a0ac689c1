"""The backend on S3 storage end to end: a real backend process configured only through
``SIMBACKEND_STORAGE=s3://...`` and boto3's standard ``AWS_*`` variables, talking HTTP
to a real moto server."""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import Backend, MotoServer, aws_env, free_port, loop_experiment

PREFIX = "lab/one"


def s3_backend(make_backend: Callable[..., Backend], endpoint: str, bucket: str,
               *args: str) -> Backend:
    """A started backend whose storage is ``s3://<bucket>/lab/one``, set by the environment."""
    env = {**aws_env(endpoint), "SIMBACKEND_STORAGE": f"s3://{bucket}/{PREFIX}"}
    return make_backend(env=env, args=args).start()


def bucket_keys(s3_client: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Key -> size of every object below `prefix` in the bucket."""
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}


def test_experiments_live_in_the_bucket_whoever_put_them_there(
        make_backend: Callable[..., Backend], s3_server: str, s3_client: Any,
        s3_bucket: str) -> None:
    backend = s3_backend(make_backend, s3_server, s3_bucket)
    assert "storage" not in backend.get("/").json()  # the storage URL is not for everyone
    assert backend.get("/ready").json()["status"] == "ready"
    assert backend.upload("flow", loop_experiment(sim_time=200.0)).status_code == 201
    version = backend.get("/v1/experiments/flow").json()["version"]
    assert f"{PREFIX}/experiments/flow/versions/{version}/main.py" in \
        bucket_keys(s3_client, s3_bucket, PREFIX)
    assert f"{PREFIX}/experiments/flow/current.json" in bucket_keys(s3_client, s3_bucket, PREFIX)
    # An experiment put into the bucket by another tool shows up and runs.
    for name, text in loop_experiment(sim_time=30.0).items():
        s3_client.put_object(Bucket=s3_bucket, Key=f"{PREFIX}/experiments/direct/{name}",
                             Body=text.encode())
    listed = {e["name"]: e for e in backend.get("/v1/experiments").json()["experiments"]}
    assert set(listed) == {"flow", "direct"} and listed["direct"]["main_script"] == "main.py"
    assert {f["path"] for f in backend.get("/v1/experiments/direct").json()["files"]} == \
        {"experiment.json", "counter.py", "main.py"}
    sim_id = backend.create("direct", state="started")["id"]
    assert backend.wait_state(sim_id, "completed", timeout=30)["error"] is None
    backend.wait_uploaded(sim_id)
    assert backend.get(f"/v1/simulations/{sim_id}/results/count.txt").text == "30"
    assert backend.delete("/v1/experiments/direct").status_code == 204
    assert bucket_keys(s3_client, s3_bucket, f"{PREFIX}/experiments/direct/") == {}


def test_runs_are_reviewed_from_the_bucket_once_the_run_dir_is_gone(
        make_backend: Callable[..., Backend], s3_server: str, s3_client: Any,
        s3_bucket: str) -> None:
    backend = s3_backend(make_backend, s3_server, s3_bucket)
    backend.upload("flow", loop_experiment(sim_time=200.0))
    sim_id = backend.create("flow", params={"step_sleep": 0.001}, state="started")["id"]
    assert backend.wait_state(sim_id, "completed", timeout=30)["error"] is None
    assert backend.wait_uploaded(sim_id)["logs_uploaded"] is True
    backend.wait_run_dir_removed(sim_id)
    base = f"{PREFIX}/simulations/{sim_id}"
    stored = bucket_keys(s3_client, s3_bucket, f"{base}/")
    assert {f"{base}/record.json", f"{base}/logs/stdout.log", f"{base}/logs/simulation.log",
            f"{base}/results/count.txt"} <= set(stored)
    record = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=f"{base}/record.json")
                        ["Body"].read())
    assert record["state"] == "completed" and record["logs_uploaded"] is True

    api = f"/v1/simulations/{sim_id}"
    logs = {f["name"]: f["size"] for f in backend.get(f"{api}/logs").json()["logs"]}
    assert logs["stdout.log"] == stored[f"{base}/logs/stdout.log"]
    stdout = backend.get(f"{api}/logs/stdout.log").text
    assert stdout.startswith("script starting\n") and "script ending 200" in stdout
    part = backend.get(f"{api}/logs/stdout.log", params={"offset": 7, "limit": 8})
    assert part.text == "starting"
    assert backend.get(f"{api}/logs/stdout.log", params={"offset": 10 ** 6}).text == ""
    assert "reached the timeout at t=200.0 ms" in backend.get(f"{api}/logs/simulation.log").text
    assert backend.get(f"{api}/results").json()["results"] == [{"name": "count.txt", "size": 3}]
    assert backend.get(f"{api}/results/count.txt").text == "200"
    assert backend.delete(api).status_code == 204
    assert bucket_keys(s3_client, s3_bucket, f"{base}/") == {}


def test_the_first_run_of_a_version_just_uploaded_reads_none_of_it_back(
        make_backend: Callable[..., Backend], own_s3_server: MotoServer) -> None:
    """The backend keeps a copy of the files it uploads: the version's first run takes
    them from there (the bucket is asked only which version is current). A version put
    in the bucket by another tool is read from the bucket, once."""
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    own_s3_server.client().create_bucket(Bucket=bucket)
    backend = s3_backend(make_backend, own_s3_server.endpoint, bucket)

    def gets_of(experiment: str, since: int) -> list[str]:
        log = own_s3_server.log_path.read_text()[since:]
        return [line for line in log.splitlines()
                if '"GET ' in line and f"/experiments/{experiment}/" in line
                and "current.json" not in line]

    assert backend.upload("flow", loop_experiment(sim_time=30.0)).status_code == 201
    since = len(own_s3_server.log_path.read_text())
    sim_id = backend.create("flow", state="started")["id"]
    assert backend.wait_state(sim_id, "completed", timeout=30)["error"] is None
    assert backend.get(f"/v1/simulations/{sim_id}/results/count.txt").text == "30"
    assert gets_of("flow", since) == []
    # The check sees a read from the bucket: a version another tool put there.
    version = backend.get("/v1/experiments/flow").json()["version"]
    client = own_s3_server.client()
    for name, text in loop_experiment(sim_time=20.0).items():
        client.put_object(Bucket=bucket, Key=f"{PREFIX}/experiments/other/{name}",
                          Body=text.encode())
    since = len(own_s3_server.log_path.read_text())
    sim_id = backend.create("other", state="started")["id"]
    assert backend.wait_state(sim_id, "completed", timeout=30)["error"] is None
    assert any("/experiments/other/main.py" in line for line in gets_of("other", since))
    assert version


BIG_LOG_SCRIPT = '''
import os
block = os.urandom(1 << 20)
with open("../logs/big.log", "wb") as big:
    for _ in range(100):
        big.write(block)
    big.write(b"THE END\\n")
sim.run_loop(1)
'''


def test_a_100_mb_log_is_uploaded_in_parts_and_tailed_with_ranges(
        make_backend: Callable[..., Backend], s3_server: str, s3_client: Any,
        s3_bucket: str) -> None:
    # Logs are capped at 64 MiB by default (what a run's head cut keeps): lift it here.
    backend = s3_backend(make_backend, s3_server, s3_bucket, "--max-log-bytes", "0")
    backend.upload("big", loop_experiment(script=BIG_LOG_SCRIPT))
    sim_id = backend.create("big", state="started")["id"]
    backend.wait_state(sim_id, "completed", timeout=60)
    backend.wait_uploaded(sim_id, timeout=120)
    size = 100 * (1 << 20) + len(b"THE END\n")
    head = s3_client.head_object(Bucket=s3_bucket,
                                 Key=f"{PREFIX}/simulations/{sim_id}/logs/big.log")
    assert head["ContentLength"] == size
    assert head["ETag"].strip('"').endswith("-13")  # a multipart upload of 13 parts of 8 MiB
    listing = backend.get(f"/v1/simulations/{sim_id}/logs").json()["logs"]
    logs = {f["name"]: f["size"] for f in listing}
    assert logs["big.log"] == size
    tail = backend.get(f"/v1/simulations/{sim_id}/logs/big.log", params={"offset": size - 8})
    assert tail.content == b"THE END\n" and tail.headers["Content-Length"] == "8"
    middle = backend.get(f"/v1/simulations/{sim_id}/logs/big.log",
                         params={"offset": (1 << 20) + 5, "limit": 100})
    first = backend.get(f"/v1/simulations/{sim_id}/logs/big.log",
                        params={"offset": 5, "limit": 100})
    assert len(middle.content) == 100 and middle.content == first.content
    assert middle.headers["Content-Length"] == "100"
    s3_client.delete_object(Bucket=s3_bucket, Key=f"{PREFIX}/simulations/{sim_id}/logs/big.log")


@pytest.mark.parametrize("problem", ["missing bucket", "no credentials", "unreachable"])
def test_unusable_storage_is_a_clear_error_and_503s(
        make_backend: Callable[..., Backend], s3_server: str, problem: str) -> None:
    endpoint, bucket = s3_server, f"missing-{uuid.uuid4().hex[:12]}"
    env = {"SIMBACKEND_STORAGE_CONNECT_TIMEOUT": "1", "SIMBACKEND_STORAGE_READ_TIMEOUT": "2",
           "SIMBACKEND_STORAGE_RETRIES": "0"}
    if problem == "no credentials":
        env |= {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    if problem == "unreachable":
        endpoint = f"http://127.0.0.1:{free_port()}"
    expected = {"missing bucket": f"bucket '{bucket}' does not exist",
                "no credentials": "no usable S3 credentials",
                "unreachable": "cannot reach S3"}[problem]
    env = {**aws_env(endpoint), **env, "SIMBACKEND_STORAGE": f"s3://{bucket}/p"}
    backend = make_backend(env=env).start()

    line = f"simbackend: storage is not usable: {expected}"
    assert line in backend.log()  # printed on stderr as one line
    assert any(expected in row and "ERROR" in row for row in backend.log().splitlines())
    assert "Traceback" not in backend.log()
    assert backend.get("/health").status_code == 200
    ready = backend.get("/ready")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
    assert expected in ready.json()["error"]["message"]
    assert f"s3://{bucket}/p" in ready.json()["error"]["message"]  # which storage
    for method, path, body in [("GET", "/v1/experiments", None),
                               ("GET", "/v1/experiments/x", None),
                               ("POST", "/v1/simulations", {"experiment": "x"})]:
        response = backend.request(method, path, json=body)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "storage_unavailable"
        assert expected in response.json()["error"]["message"]


def test_a_bad_storage_url_stops_start_up_with_one_line(
        make_backend: Callable[..., Backend]) -> None:
    backend = make_backend(env={"SIMBACKEND_STORAGE": "s3:///no-bucket"})
    with pytest.raises(AssertionError, match="backend exited 2"):
        backend.start()
    assert backend.log().strip().endswith("expected file:///absolute/path or s3://bucket[/prefix]")
    assert "Traceback" not in backend.log()


def test_storage_timeouts_are_validated(make_backend: Callable[..., Backend]) -> None:
    backend = make_backend(args=("--storage-read-timeout", "0"))
    with pytest.raises(AssertionError, match="backend exited 2"):
        backend.start()
    assert "must be positive" in backend.log()
    assert os.path.getsize(backend.data_dir / "backend.log") < 500
