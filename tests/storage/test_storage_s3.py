"""S3Storage specifics: where objects land in the bucket, what goes over the wire, failures."""

from __future__ import annotations

import io
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from storage import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    S3Storage,
    StorageError,
    StorageUnavailable,
    open_storage,
)
from storage.s3 import MIB
from tests.support import MotoServer


def fast_failing_client(endpoint: str, **client_options: Any) -> Any:
    """A client with one attempt per request and short timeouts, so failures surface at once."""
    config = Config(
        connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1, "mode": "standard"}
    )
    options = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", **client_options}
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=config, **options
    )


@pytest.fixture
def record_requests() -> Iterator[Callable[[Any], list[tuple[str, str | None]]]]:
    """Return `watch(client)`: a list filling with (operation, Range header) per request sent.

    The hooks come off at teardown, since the session's shared client outlives the test.
    """
    watched = []

    def watch(client: Any) -> list[tuple[str, str | None]]:
        sent: list[tuple[str, str | None]] = []

        def record(request: Any, event_name: str, **_: Any) -> None:
            value = request.headers.get("Range")
            operation = event_name.rsplit(".", 1)[-1]
            sent.append((operation, value.decode() if isinstance(value, bytes) else value))

        client.meta.events.register("before-send.s3", record)
        watched.append((client, record))
        return sent

    yield watch
    for client, record in watched:
        client.meta.events.unregister("before-send.s3", record)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound by the test, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def unreachable(closed_port: int) -> S3Storage:
    """An S3Storage whose endpoint refuses every connection."""
    return S3Storage("bucket", "pre", client=fast_failing_client(f"http://127.0.0.1:{closed_port}"))


@pytest.fixture
def prefixed(s3_bucket: str, s3_client: Any) -> S3Storage:
    return S3Storage(s3_bucket, "deploy/one/", client=s3_client)


def test_objects_live_under_the_prefix(prefixed: S3Storage, s3_client: Any) -> None:
    prefixed.put_bytes("a/b.txt", b"hello")
    body = s3_client.get_object(Bucket=prefixed.bucket, Key="deploy/one/a/b.txt")["Body"].read()
    assert body == b"hello"
    assert prefixed.describe() == f"s3://{prefixed.bucket}/deploy/one"


def test_prefix_does_not_leak_into_a_sibling(prefixed: S3Storage, s3_client: Any) -> None:
    s3_client.put_object(Bucket=prefixed.bucket, Key="deploy/oneself/x", Body=b"1")
    s3_client.put_object(Bucket=prefixed.bucket, Key="deploy/one/x", Body=b"22")
    assert prefixed.list() == [ObjectInfo("x", 2)]


def test_list_skips_folder_markers_and_invalid_keys(prefixed: S3Storage, s3_client: Any) -> None:
    for key in ["deploy/one/dir/", "deploy/one/a//b", "deploy/one/x/../y", "deploy/one/ok"]:
        s3_client.put_object(Bucket=prefixed.bucket, Key=key, Body=b"x")
    assert prefixed.list() == [ObjectInfo("ok", 1)]


def test_delete_prefix_removes_even_unlistable_keys(prefixed: S3Storage, s3_client: Any) -> None:
    for key in ["deploy/one/d/", "deploy/one/d/a//b", "deploy/one/d/ok", "deploy/one/e"]:
        s3_client.put_object(Bucket=prefixed.bucket, Key=key, Body=b"x")
    assert prefixed.delete_prefix("d") == 3
    remaining = s3_client.list_objects_v2(Bucket=prefixed.bucket)["Contents"]
    assert [item["Key"] for item in remaining] == ["deploy/one/e"]


def test_delete_prefix_deletes_in_batches(
    prefixed: S3Storage, s3_client: Any, record_requests: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("storage.s3._DELETE_BATCH", 2)
    for number in range(5):
        prefixed.put_bytes(f"many/{number}", b"")
    sent = record_requests(s3_client)
    assert prefixed.delete_prefix("many") == 5
    assert [name for name, _ in sent] == ["ListObjectsV2"] + ["DeleteObjects"] * 3
    assert prefixed.list() == []


def test_open_read_sends_a_ranged_get(
    prefixed: S3Storage, s3_client: Any, record_requests: Callable
) -> None:
    prefixed.put_bytes("log", b"0123456789")
    sent = record_requests(s3_client)
    assert prefixed.read_bytes("log", 2, 3) == b"234"
    assert prefixed.read_bytes("log", 7) == b"789"
    assert prefixed.read_bytes("log") == b"0123456789"
    assert sent == [("GetObject", "bytes=2-4"), ("GetObject", "bytes=7-"), ("GetObject", None)]


def test_big_uploads_use_multipart(
    prefixed: S3Storage, s3_client: Any, record_requests: Callable, tmp_path: Path
) -> None:
    (tmp_path / "big").write_bytes(b"x" * (8 * 1024 * 1024 + 1))
    sent = record_requests(s3_client)
    prefixed.upload_file(tmp_path / "big", "big")
    assert ("CreateMultipartUpload", None) in sent
    assert ("CompleteMultipartUpload", None) in sent
    assert prefixed.stat("big").size == 8 * 1024 * 1024 + 1


INVALID = [
    "",
    "/abs",
    "/",
    "..",
    "../x",
    "a/../b",
    "a/..",
    "a//b",
    "a\\b",
    "a\x00b",
    "a\nb",
    "a\x1fb",
    "a\x7fb",
    "a/",
]


@pytest.mark.parametrize("key", INVALID)
def test_invalid_keys_send_no_request(
    unreachable: S3Storage, record_requests: Callable, tmp_path: Path, key: str
) -> None:
    sent = record_requests(unreachable.client)
    (tmp_path / "f").write_bytes(b"x")
    for call in [
        lambda: unreachable.stat(key),
        lambda: unreachable.exists(key),
        lambda: unreachable.open_read(key, 0, 0),
        lambda: unreachable.read_bytes(key),
        lambda: unreachable.put_bytes(key, b"x"),
        lambda: unreachable.put_stream(key, io.BytesIO(b"x")),
        lambda: unreachable.upload_file(tmp_path / "f", key),
        lambda: unreachable.download_file(key, tmp_path / "out"),
        lambda: unreachable.delete(key),
        lambda: unreachable.list(key + "/.."),
        lambda: unreachable.delete_prefix("../" + key),
        lambda: unreachable.download_prefix("/" + key, tmp_path / "down"),
        lambda: unreachable.upload_dir(tmp_path, "a/../" + key),
    ]:
        with pytest.raises(InvalidKey):  # not StorageUnavailable: nothing was sent
            call()
    assert sent == []
    assert not (tmp_path / "out").exists() and not (tmp_path / "down").exists()


def test_closed_port_is_unavailable(unreachable: S3Storage, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    started = time.monotonic()
    for call in [
        unreachable.check,
        lambda: unreachable.list(),
        lambda: unreachable.stat("k"),
        lambda: unreachable.exists("k"),
        lambda: unreachable.read_bytes("k", 1, 2),
        lambda: unreachable.put_bytes("k", b"x"),
        lambda: unreachable.upload_file(tmp_path / "f", "k"),
        lambda: unreachable.download_file("k", tmp_path / "out"),
        lambda: unreachable.delete("k"),
        lambda: unreachable.delete_prefix("p"),
        lambda: unreachable.upload_dir(tmp_path, "p"),
        lambda: unreachable.download_prefix("p", tmp_path / "down"),
    ]:
        with pytest.raises(StorageUnavailable, match="cannot reach S3"):
            call()
    assert time.monotonic() - started < 10
    assert not (tmp_path / "out").exists()


def test_missing_bucket_is_unavailable(s3_server: str, tmp_path: Path) -> None:
    storage = S3Storage("no-such-bucket", client=fast_failing_client(s3_server))
    with pytest.raises(StorageUnavailable, match="'no-such-bucket' does not exist"):
        storage.check()
    (tmp_path / "f").write_bytes(b"x")
    for call in [
        storage.list,
        lambda: storage.read_bytes("k"),
        lambda: storage.put_bytes("k", b"x"),
        lambda: storage.upload_file(tmp_path / "f", "k"),  # boto3 wraps this one's error
        lambda: storage.upload_dir(tmp_path, "p"),
    ]:
        with pytest.raises(StorageUnavailable, match="does not exist"):
            call()


def test_missing_credentials_are_unavailable(
    s3_env: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage = S3Storage(s3_bucket)
    with pytest.raises(StorageUnavailable, match="credentials"):
        storage.check()


def test_standard_configuration_finds_the_endpoint(
    s3_env: str, s3_bucket: str, s3_client: Any
) -> None:
    storage = S3Storage(s3_bucket, "p")  # no client: boto3 reads AWS_ENDPOINT_URL and friends
    storage.check()
    storage.put_bytes("k", b"v")
    assert s3_client.get_object(Bucket=s3_bucket, Key="p/k")["Body"].read() == b"v"


def test_default_client_has_bounded_timeouts_and_retries(s3_env: str) -> None:
    storage = S3Storage("bucket")
    config = storage.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (5, 5)
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}  # 3 retries
    assert config.max_pool_connections >= storage.transfer_workers
    # The readiness probe makes one attempt, so it answers within one timeout.
    assert storage._probe_client.meta.config.retries["total_max_attempts"] == 1


def test_open_storage_passes_timeouts_and_retries(s3_env: str) -> None:
    storage = open_storage("s3://bucket/p", connect_timeout=0.5, read_timeout=2, retries=0)
    config = storage.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (0.5, 2)
    assert config.retries["total_max_attempts"] == 1
    assert open_storage("file:///srv/x", connect_timeout=0.5).describe() == "file:///srv/x"


@pytest.mark.parametrize("options", [{"connect_timeout": 0}, {"read_timeout": -1}, {"retries": -1}])
def test_bad_timeouts_are_refused(s3_env: str, options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="timeouts must be positive"):
        S3Storage("bucket", **options)


def test_object_not_found_names_the_key(prefixed: S3Storage) -> None:
    with pytest.raises(ObjectNotFound, match="'nope'") as caught:
        prefixed.read_bytes("nope", 3, 4)
    assert caught.value.key == "nope"


@pytest.mark.parametrize("bucket", ["", "a/b"])
def test_bad_bucket_names(bucket: str, s3_client: Any) -> None:
    with pytest.raises(StorageError, match="bucket"):
        S3Storage(bucket, client=s3_client)


def test_download_prefix_is_one_listing_and_parallel_single_gets(
    prefixed: S3Storage, s3_client: Any, record_requests: Callable, tmp_path: Path
) -> None:
    for number in range(40):
        prefixed.put_bytes(f"exp/f{number:02d}.py", b"x" * number)
    threads: set[str] = set()

    def note_thread(**_: Any) -> None:
        threads.add(threading.current_thread().name)

    sent = record_requests(s3_client)
    s3_client.meta.events.register("before-send.s3.GetObject", note_thread)
    try:
        infos = prefixed.download_prefix("exp", tmp_path / "down")
    finally:
        s3_client.meta.events.unregister("before-send.s3.GetObject", note_thread)
    assert [name for name, _ in sent] == ["ListObjectsV2"] + ["GetObject"] * 40  # no HeadObject
    assert len(infos) == 40 and (tmp_path / "down" / "f39.py").read_bytes() == b"x" * 39
    assert len(threads) > 1, "the downloads ran on one thread"


def test_a_100_mb_log_uploads_in_parts(
    prefixed: S3Storage, s3_client: Any, record_requests: Callable, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    block, size = os.urandom(MIB), 100 * MIB + 12345
    with open(logs / "simulation.log", "wb") as log:
        for _ in range(100):
            log.write(block)
        log.write(block[:12345])
    (logs / "stdout.log").write_text("small\n")
    sent = record_requests(s3_client)
    try:
        infos = prefixed.upload_dir(logs, "simulations/s1/logs")
        assert infos == [
            ObjectInfo("simulations/s1/logs/simulation.log", size),
            ObjectInfo("simulations/s1/logs/stdout.log", 6),
        ]
        parts = math.ceil(size / (8 * MIB))
        operations = [name for name, _ in sent]
        assert operations.count("UploadPart") == parts == 13
        assert (
            operations.count("CompleteMultipartUpload") == 1 and operations.count("PutObject") == 1
        )
        big = s3_client.head_object(
            Bucket=prefixed.bucket, Key="deploy/one/simulations/s1/logs/simulation.log"
        )
        assert big["ETag"].strip('"').endswith(f"-{parts}")  # S3 marks multipart objects so
        assert big["ContentLength"] == size
        assert (
            prefixed.read_bytes("simulations/s1/logs/simulation.log", size - 20000, 10)
            == block[12345 - 20000 :][:10]
        )
    finally:
        prefixed.delete_prefix("simulations")  # the session's server keeps objects in memory


def test_refused_credentials_are_unavailable(tmp_path: Path) -> None:
    # moto checks signatures once this many requests went through unauthenticated.
    server = MotoServer(tmp_path / "moto.log", env={"INITIAL_NO_AUTH_ACTION_COUNT": "1"}).start()
    try:
        server.client().create_bucket(Bucket="locked")
        storage = S3Storage("locked", client=fast_failing_client(server.endpoint))
        for call in [storage.check, storage.list, lambda: storage.put_bytes("k", b"x")]:
            with pytest.raises(StorageUnavailable, match="denied"):
                call()
    finally:
        server.stop()


def test_a_hanging_server_fails_within_the_timeouts_and_recovers(
    own_s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in own_s3_server.aws_env().items():
        monkeypatch.setenv(name, value)
    own_s3_server.client().create_bucket(Bucket="hangs")
    storage = S3Storage("hangs", "p", connect_timeout=1, read_timeout=1, retries=1)
    storage.put_bytes("before", b"1")
    (tmp_path / "big").write_bytes(b"x" * (9 * MIB))
    own_s3_server.freeze()
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="cannot reach S3"):
        storage.check()
    assert time.monotonic() - started < 2.5  # one attempt: the probe does not retry
    for call in [
        storage.list,
        lambda: storage.read_bytes("before"),
        lambda: storage.put_bytes("k", b"x"),
        lambda: storage.upload_file(tmp_path / "big", "big"),
        lambda: storage.download_prefix("", tmp_path / "down"),
    ]:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="cannot reach S3"):
            call()
        assert time.monotonic() - started < 15  # two attempts of ~1 s, plus backoff
    own_s3_server.thaw()
    storage.check()
    storage.upload_file(tmp_path / "big", "big")
    assert storage.stat("big").size == 9 * MIB
    assert storage.read_bytes("before") == b"1"
