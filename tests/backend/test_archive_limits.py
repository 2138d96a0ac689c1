"""What an upload may cost: entries are capped as they stream, the gzip trailer is
checked, decompressed bytes are bounded, and errors never show a backend path."""
from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator

import psutil
import pytest
import requests

from backend.archive import _MAX_MEMBERS
from tests.backend.test_api_errors import assert_error
from tests.support import (
    Backend,
    HealthProbe,
    gzip_bytes,
    loop_experiment,
    make_archive,
    many_entries_archive,
)

GZIP = {"Content-Type": "application/gzip"}


@pytest.fixture
def small_backend(make_backend) -> Iterator[Backend]:
    """A backend that takes archives of at most 1 MB (so bombs are small to build)."""
    yield make_backend(args=("--max-archive-bytes", "1000000")).start()


def _cpu_seconds(backend: Backend) -> float:
    times = psutil.Process(backend.proc.pid).cpu_times()
    return times.user + times.system


def test_countless_entries_stop_at_the_cap_quickly(backend: Backend) -> None:
    body = many_entries_archive(400_000)        # ~200 MB of headers in ~200 KB
    cpu_before = _cpu_seconds(backend)
    with HealthProbe(backend.url) as probe:
        began = time.monotonic()
        response = backend.put("/v1/experiments/many", data=body, headers=GZIP)
        took = time.monotonic() - began
    error = assert_error(response, 400, "invalid_archive")
    assert f"more than {_MAX_MEMBERS} entries" in error["message"]
    # Parsing every header first took seconds of CPU here (124 s for 4 M entries).
    assert took < 3 and _cpu_seconds(backend) - cpu_before < 2, (took, _cpu_seconds(backend))
    probe.assert_fast()
    assert backend.get("/v1/experiments").json()["experiments"] == []


def _good_archive() -> bytes:
    return make_archive(loop_experiment())


@pytest.mark.parametrize("corrupt", [
    lambda b: b[:-8] + bytes([b[-8] ^ 0xFF]) + b[-7:],   # a wrong CRC-32
    lambda b: b[:-4] + (int.from_bytes(b[-4:], "little") + 1).to_bytes(4, "little"),  # length
    lambda b: b[:-8],                                     # no trailer at all
], ids=["bad-crc", "bad-length", "no-trailer"])
def test_a_gzip_stream_failing_its_trailer_is_refused(backend: Backend, corrupt) -> None:
    response = backend.put("/v1/experiments/x", data=corrupt(_good_archive()), headers=GZIP)
    error = assert_error(response, 400, "invalid_archive")
    assert "gzip" in error["message"]
    assert backend.get("/v1/experiments").json()["experiments"] == []


def test_an_intact_archive_still_passes(backend: Backend) -> None:
    assert backend.put("/v1/experiments/x", data=_good_archive(), headers=GZIP).status_code == 201


def test_bytes_hidden_after_the_end_of_the_tar_are_bounded(small_backend: Backend) -> None:
    inner = gzip.decompress(_good_archive())
    bomb = gzip_bytes(lambda: iter([inner] + [b"\0" * (1 << 20)] * 300))  # +300 MB of zeros
    assert len(bomb) < 1_000_000
    with HealthProbe(small_backend.url) as probe:
        response = small_backend.put("/v1/experiments/bomb", data=bomb, headers=GZIP)
    error = assert_error(response, 400, "invalid_archive")
    assert "decompresses to more than" in error["message"]
    probe.assert_fast()


def test_a_file_bigger_than_the_limit_is_refused_before_it_is_read(small_backend: Backend) -> None:
    bomb = make_archive({**loop_experiment(), "zeros.bin": b"\0" * 5_000_000})
    response = small_backend.put("/v1/experiments/bomb", data=bomb, headers=GZIP)
    assert "more than 1000000 bytes" in assert_error(response, 400, "invalid_archive")["message"]


@pytest.mark.parametrize("files", [
    {"a": "file", "a/b": "inside a file"},
    {"a/b": "x", "a": "file over a folder"},
    {"main.py": "1", "./main.py": "twice"},
])
def test_archive_errors_name_entries_never_backend_paths(backend: Backend, files) -> None:
    body = make_archive({**loop_experiment(), **files})
    response = backend.put("/v1/experiments/x", data=body, headers=GZIP)
    error = assert_error(response, 400, "invalid_archive")
    assert str(backend.data_dir) not in response.text and "/tmp" not in error["message"], error


def test_health_answers_while_uploads_are_refused(backend: Backend) -> None:
    body = many_entries_archive(200_000)
    results: list[int] = []

    def upload() -> None:
        for _ in range(3):
            try:
                results.append(backend.put("/v1/experiments/m", data=body,
                                           headers=GZIP).status_code)
            except requests.RequestException:
                results.append(0)

    threads = [threading.Thread(target=upload) for _ in range(2)]
    with HealthProbe(backend.url) as probe:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert results == [400] * 6
    probe.assert_fast()
