"""Bad input gets a clear JSON error and changes nothing."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from tests.support import Backend, loop_experiment, make_archive


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def test_root_reports_kernels(backend: Backend) -> None:
    info = backend.get("/").json()
    assert info["name"] == "simbackend" and info["api"] == "v1"
    assert set(info["kernels"]) >= {"nest", "python"}
    assert info["kernels"]["python"].count(".") == 2
    assert backend.get("/ready").json()["status"] == "ready"


@pytest.mark.parametrize("method,path,status,code", [
    ("GET", "/no/such/route", 404, "not_found"),
    ("DELETE", "/", 405, "method_not_allowed"),
    ("POST", "/v1/simulations/abc/state", 405, "method_not_allowed"),
    ("GET", "/v1/simulations/nope", 404, "simulation_not_found"),
    ("GET", "/v1/simulations/nope/state", 404, "simulation_not_found"),
    ("GET", "/v1/simulations/nope/status", 404, "simulation_not_found"),
    ("GET", "/v1/simulations/nope/logs", 404, "simulation_not_found"),
    ("GET", "/v1/simulations/nope/results/x.npz", 404, "simulation_not_found"),
    ("DELETE", "/v1/simulations/nope", 404, "simulation_not_found"),
    ("GET", "/v1/experiments/nope", 404, "experiment_not_found"),
    ("DELETE", "/v1/experiments/nope", 404, "experiment_not_found"),
    ("GET", "/v1/simulations?state=bogus", 400, "invalid_state"),
])
def test_routes_answer_json_errors(backend: Backend, method: str, path: str, status: int,
                                   code: str) -> None:
    assert_error(backend.request(method, path), status, code)


@pytest.mark.parametrize("body,status,code", [
    ("{not json", 400, "bad_json"),
    ("", 400, "bad_json"),
    ("[1, 2]", 400, "bad_request"),
    ('{"experiment": "nope"}', 404, "experiment_not_found"),
    ('{}', 400, "missing_field"),
    ('{"experiment": "loop", "colour": "red"}', 400, "unknown_field"),
    ('{"experiment": "loop", "id": "../x"}', 400, "invalid_id"),
    ('{"experiment": "loop", "id": ""}', 400, "invalid_id"),
    ('{"experiment": "loop", "id": "nl\\n"}', 400, "invalid_id"),        # "$" matched before "\n"
    ('{"experiment": "loop\\n", "id": "s1"}', 400, "invalid_name"),
    ('{"experiment": "loop", "params": [1]}', 400, "invalid_params"),
    ('{"experiment": "loop", "timeout": 5}', 400, "invalid_timeout"),
    ('{"experiment": "loop", "timeout": {"sim_time": -1}}', 400, "invalid_timeout"),
    ('{"experiment": "loop", "timeout": {"wall": 1}}', 400, "invalid_timeout"),
    ('{"experiment": "loop", "main_script": "/etc/passwd"}', 400, "invalid_main_script"),
    ('{"experiment": "loop", "main_script": "other.py"}', 400, "invalid_main_script"),
    ('{"experiment": "loop", "state": "paused"}', 400, "invalid_state"),
    ('{"experiment": "loop", "state": "completed"}', 400, "invalid_state"),
])
def test_bad_post_changes_nothing(backend: Backend, loop: str, body: str, status: int,
                                  code: str) -> None:
    response = backend.post("/v1/simulations", data=body,
                            headers={"Content-Type": "application/json"})
    assert_error(response, status, code)
    assert backend.get("/v1/simulations").json()["simulations"] == []
    runs = backend.data_dir / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_state_requests_are_checked(backend: Backend, loop: str) -> None:
    sim_id = backend.create(loop, id="s1")["id"]
    url = f"/v1/simulations/{sim_id}/state"
    assert_error(backend.put(url, data="{oops"), 400, "bad_json")
    assert_error(backend.put(url, json={"state": "bogus"}), 400, "invalid_state")
    assert_error(backend.put(url, json={"state": "completed"}), 400, "invalid_state")
    assert_error(backend.put(url, json={"state": "failed"}), 400, "invalid_state")
    assert_error(backend.put(url, json={"state": 3}), 400, "invalid_state")
    assert_error(backend.put(url, json={}), 400, "invalid_state")
    assert_error(backend.put(url, json={"state": "paused"}), 409, "invalid_transition")
    assert_error(backend.put("/v1/simulations/nope/state", json={"state": "started"}), 404)
    assert backend.record(sim_id)["state"] == "created"
    assert_error(backend.set_state(sim_id, "created"), 400, "invalid_state")
    backend.set_state(sim_id, "initialized")
    assert backend.set_state(sim_id, "initialized").json() == {"state": "initialized"}  # no-op


def test_duplicate_id_conflicts(backend: Backend, loop: str) -> None:
    backend.create(loop, id="mine")
    assert_error(backend.post("/v1/simulations", json={"experiment": loop, "id": "mine"}),
                 409, "duplicate_id")
    assert len(backend.get("/v1/simulations").json()["simulations"]) == 1


def test_delete_only_when_terminal(backend: Backend, loop: str) -> None:
    sim_id = backend.create(loop, params={"step_sleep": 0.001}, state="started")["id"]
    assert_error(backend.delete(f"/v1/simulations/{sim_id}"), 409, "not_terminal")
    backend.set_state(sim_id, "stopped")
    backend.wait_uploaded(sim_id)
    assert backend.delete(f"/v1/simulations/{sim_id}").status_code == 204
    assert_error(backend.get(f"/v1/simulations/{sim_id}"), 404)
    assert not (backend.data_dir / "storage" / "simulations" / sim_id).exists()


def test_list_filters(backend: Backend, loop: str) -> None:
    backend.upload("other", loop_experiment())
    a = backend.create(loop)["id"]
    b = backend.create("other")["id"]
    backend.set_state(b, "stopped")
    def listed(**q: str) -> list[str]:
        return [s["id"] for s in backend.get("/v1/simulations", params=q).json()["simulations"]]
    assert sorted(listed()) == sorted([a, b])
    assert listed(state="created") == [a]
    assert listed(state="stopped") == [b]
    assert listed(experiment="other") == [b]
    assert listed(experiment="other", state="created") == []


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        good = json.dumps({"main_script": "main.py"}).encode()
        for name, content in (("experiment.json", good), ("main.py", b"pass\n")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"x"):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


@pytest.mark.parametrize("member", [
    _member("../escape.py"),
    _member("a/../../escape.py"),
    _member("/etc/evil.py"),
    _member("bad\x07name.py"),
    _member("link.py", tarfile.SYMTYPE, "/etc/passwd"),
    _member("hard.py", tarfile.LNKTYPE, "main.py"),
    _member("fifo", tarfile.FIFOTYPE),
    _member("dev", tarfile.CHRTYPE),
])
def test_bad_archive_members_are_refused_and_nothing_is_written(backend: Backend,
                                                                member) -> None:
    info, data = member
    response = backend.put("/v1/experiments/evil", data=_tar_with(info, data),
                           headers={"Content-Type": "application/gzip"})
    assert_error(response, 400, "invalid_archive")
    assert backend.get("/v1/experiments").json()["experiments"] == []
    storage = backend.data_dir / "storage"
    assert not storage.exists() or not [p for p in storage.rglob("*") if p.is_file()]


@pytest.mark.parametrize("name", ["..", "a..b", ".hidden", "-x", "a b", "x" * 200, "a/b",
                                  "%2e%2e", "nl%0A", "nl%0D%0A"])
def test_bad_experiment_names_are_refused(backend: Backend, name: str) -> None:
    response = backend.put(f"/v1/experiments/{name}", data=make_archive(loop_experiment()),
                           headers={"Content-Type": "application/gzip"})
    assert response.status_code in (400, 404), response.text
    assert response.json()["error"]["code"] in ("invalid_name", "not_found")
    assert backend.get("/v1/experiments").json()["experiments"] == []


@pytest.mark.parametrize("body,code", [
    (b"not a tarball", "invalid_archive"),
    (make_archive({"main.py": "pass"}), "invalid_archive"),                     # no experiment.json
    (make_archive({"experiment.json": "{", "main.py": "pass"}), "invalid_archive"),
    (make_archive({"experiment.json": "{}", "main.py": "pass"}), "invalid_archive"),
    (make_archive({"experiment.json": '{"main_script": "run.py"}'}), "invalid_archive"),
    (make_archive(loop_experiment())[:-40], "invalid_archive"),                # truncated
])
def test_bad_archives_are_refused(backend: Backend, body: bytes, code: str) -> None:
    response = backend.put("/v1/experiments/x", data=body,
                           headers={"Content-Type": "application/gzip"})
    assert_error(response, 400, code)
    assert backend.get("/v1/experiments").json()["experiments"] == []


def test_archive_needs_gzip_content_type(backend: Backend) -> None:
    response = backend.put("/v1/experiments/x", data=make_archive(loop_experiment()),
                           headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")


def test_experiment_upload_replace_describe_delete(backend: Backend) -> None:
    files = loop_experiment()
    assert backend.upload("exp", {**files, "extra/data.txt": "123"}).status_code == 201
    described = backend.get("/v1/experiments/exp").json()
    assert described["config"]["main_script"] == "main.py"
    assert {f["path"]: f["size"] for f in described["files"]}["extra/data.txt"] == 3
    # Replacing drops files the new archive lacks; a top folder in the archive is accepted.
    response = backend.put("/v1/experiments/exp", data=make_archive(files, top="exp"),
                           headers={"Content-Type": "application/gzip"})
    assert response.status_code == 200
    paths = {f["path"] for f in response.json()["files"]}
    assert paths == set(files)
    listed = backend.get("/v1/experiments").json()["experiments"]
    assert [(e["name"], e["main_script"]) for e in listed] == [("exp", "main.py")]
    assert backend.delete("/v1/experiments/exp").status_code == 204
    assert backend.get("/v1/experiments").json()["experiments"] == []
