"""Start-up hygiene and leaks: a private data dir, leftovers of a kill -9 removed,
nothing of the backend's paths or storage in public answers."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from tests.backend.test_api_errors import assert_error
from tests.support import NO_POOL, Backend, loop_experiment


def test_scratch_dirs_and_stale_temp_files_are_removed_at_start(make_backend) -> None:
    backend = make_backend()
    data = backend.data_dir
    scratch = data / "tmp" / "tmpk1ll3d"
    scratch.mkdir(parents=True)
    (scratch / "main.py").write_text("half an upload")
    stale = data / "storage" / "experiments" / "x" / ".tmp-part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\0" * 4096)
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    fresh = data / "storage" / ".tmp-live"  # another writer's upload in progress
    fresh.write_bytes(b"x")
    backend.start()
    assert not scratch.exists() and not stale.exists()
    assert fresh.exists()
    assert backend.get("/v1/experiments").json()["experiments"] == []


def _shared(folder: Path) -> list[tuple[str, str]]:
    """Files and folders below ``folder`` that group or others may read."""
    return [(str(p.relative_to(folder)), oct(stat.S_IMODE(p.stat().st_mode)))
            for p in folder.rglob("*")
            if not p.is_symlink() and p.exists() and p.stat().st_mode & 0o077
            and p.name != "backend.log"]  # the test harness's capture of the output


def test_the_data_dir_and_its_files_are_private(backend: Backend, loop: str) -> None:
    sim_id = backend.create(loop, state="started", timeout={"sim_time": 20})["id"]
    backend.wait_state(sim_id, "completed")
    backend.wait_uploaded(sim_id)
    backend.wait_run_dir_removed(sim_id)
    assert stat.S_IMODE(backend.data_dir.stat().st_mode) == 0o700
    assert not _shared(backend.data_dir)


# lifecycle.messages.write_json_atomic fchmods its files to 0o644 whatever the umask:
# status.json and run.json of a live run are readable to anyone who can enter the
# (0700) data dir. Its default belongs to lifecycle/, under another refactor.
def test_run_files_of_a_live_run_are_private(backend: Backend, loop: str) -> None:
    sim_id = backend.create(loop, state="started")["id"]
    backend.wait_advancing(sim_id)
    assert not _shared(backend.data_dir / "runs" / sim_id)


def test_an_existing_data_dir_is_made_private(make_backend) -> None:
    backend = make_backend()
    backend.data_dir.mkdir(mode=0o755)
    os.chmod(backend.data_dir, 0o755)
    backend.start()
    assert stat.S_IMODE(backend.data_dir.stat().st_mode) == 0o700


def test_root_does_not_show_storage_or_paths(backend: Backend) -> None:
    text = backend.get("/").text
    assert "storage" not in backend.get("/").json()
    assert str(backend.data_dir) not in text and "file://" not in text


@pytest.mark.parametrize("path", ["/v1//experiments", "/v1/simulations//x",
                                  "/v1/experiments//x", "/health//"])
def test_double_slashes_are_a_json_404_not_a_redirect(backend: Backend, path: str) -> None:
    assert_error(backend.get(path, allow_redirects=False), 404)


def test_leading_double_slashes_answer_json(backend: Backend) -> None:
    # waitress strips leading slashes from PATH_INFO itself: '//health' is '/health'.
    response = backend.get("//health", allow_redirects=False)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_double_slashes_in_process_are_a_json_404(tmp_path: Path) -> None:
    from backend.app import create_app
    from backend.config import Config

    client = create_app(Config(data_dir=tmp_path, examples_dir="", no_auth=True,
                               **NO_POOL)).test_client()
    for path in ("/v1//experiments", "/v1//simulations"):
        response = client.get(path)
        assert response.status_code == 404 and response.json["error"]["code"] == "not_found"


def test_archive_errors_show_no_scratch_path(backend: Backend) -> None:
    files = {**loop_experiment(), "a": "file", "a/b": "in a file"}
    from tests.support import make_archive

    response = backend.put("/v1/experiments/x", data=make_archive(files),
                           headers={"Content-Type": "application/gzip"})
    assert_error(response, 400, "invalid_archive")
    assert str(Path(backend.data_dir)) not in response.text
