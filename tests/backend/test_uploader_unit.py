"""The uploader's stop, with a storage whose uploads hang until released: a stop waits
for the uploads in flight a bounded time, starts no new one, and retries no more."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.uploader import Uploader, UploadJob
from storage import StorageError
from tests.support import wait_until


class HangingStorage:
    """Uploads wait for ``release`` (or fail at once with ``failing``)."""

    def __init__(self, failing: bool = False) -> None:
        self.release = threading.Event()
        self.failing = failing
        self.calls = 0
        self.entered = threading.Event()

    def upload_dir(self, folder: Path, prefix: str, max_files: int) -> list[str]:
        self.calls += 1
        self.entered.set()
        if self.failing:
            raise StorageError("cannot reach S3")
        self.release.wait(10)
        return [f"{prefix}{p.name}" for p in folder.iterdir()]

    def put_bytes(self, key: str, data: bytes) -> None:
        pass

    def describe(self) -> str:
        return "hanging storage"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "stdout.log").write_text("a line\n")
    return tmp_path


def job(run_dir: Path, uploaded: list[str], sim_id: str = "s1") -> UploadJob:
    return UploadJob(sim_id, run_dir, lambda: {"id": sim_id}, lambda: uploaded.append(sim_id))


@pytest.fixture
def storage() -> Iterator[HangingStorage]:
    storage = HangingStorage()
    yield storage
    storage.release.set()  # no thread is left waiting


def in_thread(target: Callable[..., Any], *args: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(target(*args)), daemon=True)
    thread.start()
    return thread, result


def test_a_stop_waits_for_an_upload_in_flight_that_ends(storage: HangingStorage,
                                                         run_dir: Path) -> None:
    uploader, uploaded = Uploader(storage, retry_delay=60), []
    uploading, done = in_thread(uploader.upload, job(run_dir, uploaded))
    assert storage.entered.wait(5)
    closing, left = in_thread(uploader.close, 5.0)
    closing.join(0.2)
    assert closing.is_alive(), "the stop did not wait for the upload in flight"
    storage.release.set()
    closing.join(5)
    uploading.join(5)
    assert left == [[]] and done == [True] and uploaded == ["s1"]


def test_a_stop_leaves_an_upload_that_hangs(storage: HangingStorage, run_dir: Path) -> None:
    uploader, uploaded = Uploader(storage, retry_delay=60), []
    in_thread(uploader.upload, job(run_dir, uploaded))
    assert storage.entered.wait(5)
    assert uploader.close(0.2) == ["s1"]
    assert uploaded == []


def test_after_a_stop_no_upload_starts(storage: HangingStorage, run_dir: Path) -> None:
    uploader, uploaded = Uploader(storage, retry_delay=60), []
    assert uploader.close() == []
    assert uploader.upload(job(run_dir, uploaded)) is False
    assert storage.calls == 0 and uploaded == []


def test_after_a_stop_no_retry_starts(run_dir: Path) -> None:
    storage = HangingStorage(failing=True)
    uploader, uploaded = Uploader(storage, retry_delay=0.05), []
    assert uploader.upload(job(run_dir, uploaded)) is False
    wait_until(lambda: storage.calls >= 2, 5, "a retry")  # the retrier retries
    assert uploader.close() == []
    calls = storage.calls
    # The retrier has ended: nothing can call the storage any more.
    wait_until(lambda: not uploader._thread.is_alive(), 5, "the retrier to end")
    assert storage.calls == calls and uploaded == []
