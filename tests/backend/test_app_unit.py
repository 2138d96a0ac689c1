"""The app factory and error mapping, in process (no server, no simulations)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from backend.app import create_app
from backend.config import Config
from tests.support import NO_POOL, python_c


@pytest.fixture
def app(tmp_path: Path):
    return create_app(Config(data_dir=tmp_path, examples_dir="", no_auth=True, **NO_POOL))


def test_unhandled_exception_is_a_json_500_without_traceback(app) -> None:
    @app.route("/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.json["error"]["code"] == "internal_error"
    body = response.get_data(as_text=True)
    assert "secret internal detail" not in body and "Traceback" not in body


def test_oversized_body_is_a_json_413(tmp_path: Path) -> None:
    app = create_app(Config(data_dir=tmp_path, examples_dir="", max_archive_bytes=1000,
                            no_auth=True, **NO_POOL))
    response = app.test_client().put("/v1/experiments/x", data=b"x" * 5000,
                                     headers={"Content-Type": "application/gzip"})
    assert response.status_code == 413
    assert response.json["error"]["code"] == "request_entity_too_large"


def test_config_reads_environment_and_rejects_bad_numbers(tmp_path: Path) -> None:
    env = {"SIMBACKEND_PORT": "9000", "SIMBACKEND_DATA_DIR": str(tmp_path),
           "SIMBACKEND_STOP_GRACE": "2.5"}
    config = Config.from_env(env, port=9100)
    assert config.port == 9100 and config.stop_grace == 2.5
    assert config.storage == (tmp_path / "storage").as_uri()
    with pytest.raises(ValueError, match="SIMBACKEND_PORT"):
        Config.from_env({"SIMBACKEND_PORT": "eighty"})


def test_examples_are_seeded_once(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    app = create_app(Config(data_dir=tmp_path, examples_dir=str(examples), no_auth=True,
                            **NO_POOL))
    names = {e["name"] for e in app.test_client().get("/v1/experiments").json["experiments"]}
    assert {"hello", "closed_loop"} <= names
    # A user's replacement is not overwritten by the next start.
    store = app.extensions["simbackend"].experiments
    mine = tmp_path / "mine"
    shutil.copytree(examples / "hello", mine)
    (mine / "extra.txt").write_text("mine")
    store.put_dir("hello", mine)
    app2 = create_app(Config(data_dir=tmp_path, examples_dir=str(examples), no_auth=True,
                             **NO_POOL))
    files = app2.test_client().get("/v1/experiments/hello").json["files"]
    assert "extra.txt" in {f["path"] for f in files}


def test_storage_settings_reach_the_s3_client(tmp_path: Path, s3_env: str, s3_bucket: str) -> None:
    env = {"SIMBACKEND_DATA_DIR": str(tmp_path), "SIMBACKEND_STORAGE": f"s3://{s3_bucket}/p",
           "SIMBACKEND_STORAGE_CONNECT_TIMEOUT": "0.5", "SIMBACKEND_STORAGE_READ_TIMEOUT": "2",
           "SIMBACKEND_STORAGE_RETRIES": "1"}
    app = create_app(Config.from_env(env, examples_dir="", **NO_POOL))
    services = app.extensions["simbackend"]
    assert services.storage_problem is None
    config = services.storage.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (0.5, 2)
    assert config.retries["total_max_attempts"] == 2
    assert app.test_client().get("/ready").status_code == 200


@pytest.mark.parametrize("name,value", [("STORAGE_CONNECT_TIMEOUT", "0"),
                                        ("STORAGE_READ_TIMEOUT", "-1"),
                                        ("STORAGE_RETRIES", "-1"), ("STORAGE_RETRIES", "1.5")])
def test_bad_storage_settings_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"SIMBACKEND_{name}"):
        Config.from_env({f"SIMBACKEND_{name}": value})


def test_close_stops_the_threads_the_app_started(tmp_path: Path) -> None:
    import threading

    def ours() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name in ("watchdog", "upload-retry")}

    before = ours()
    app = create_app(Config(data_dir=tmp_path, examples_dir="", no_auth=True, **NO_POOL))
    assert ours() - before == set() or {"watchdog", "upload-retry"} <= ours()
    app.extensions["simbackend"].close()
    assert ours() <= before, "close() left the watchdog or the upload retrier running"


def test_the_backend_imports_neither_an_http_client_nor_pyjwt_at_start() -> None:
    """It shares the client's settings, not its HTTP library; and imports PyJWT only
    when JWTs are configured: each would add ~40-50 ms to every start of the backend."""
    code = ("import sys, backend.cli, backend.app, backend.wsgi_server; print(sorted("
            "{'requests', 'urllib3', 'jwt', 'cryptography'} & set(sys.modules)))")
    found = python_c(code, timeout=60, check=True).stdout.strip()
    assert found == "[]", found


def test_what_the_backend_made_at_start_up_is_left_out_of_later_collections(
        tmp_path: Path) -> None:
    """Frozen before it serves, so no collection set off by a request goes through it
    (a fake server stands in for waitress and reports at once; in a process of its own:
    the freeze lasts the process)."""
    code = (
        "import gc\n"
        "from backend import cli, wsgi_server\n"
        "class Serving:\n"
        "    effective_port = 0\n"
        "    def run(self):\n"
        "        print(gc.get_freeze_count(), len(gc.get_objects()), flush=True)\n"
        "wsgi_server.create_server = lambda app, config: Serving()\n"
        f"cli.main(['serve', '--data-dir', {str(tmp_path)!r}, '--examples-dir', '',\n"
        "          '--pool-nest', '0', '--pool-python', '0'])\n")
    done = python_c(code, timeout=120)
    assert done.returncode == 0, done.stderr
    frozen, tracked = map(int, done.stdout.splitlines()[-1].split())
    assert frozen > 10_000  # Flask, waitress, the app
    assert tracked < 200, tracked  # what serving made so far
