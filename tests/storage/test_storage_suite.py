"""The one behaviour every Storage backend must show; run against each by the `storage` fixture."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from storage import (
    InvalidKey,
    LocalStorage,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StorageError,
    open_storage,
)

DATA = bytes(range(256)) * 4  # 1 KiB, every byte value
BIG = os.urandom(9 * 1024 * 1024)  # past the 8 MiB multipart threshold


class ShortReads(io.RawIOBase):
    """A non-seekable stream like a socket: the first read is full, later ones stop at `chunk`.

    (A first short read would hide the danger: s3transfer would take it for a small object.)
    """

    def __init__(self, data: bytes, chunk: int = 65536) -> None:
        self._data = memoryview(data)
        self._chunk = chunk
        self._first = True

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        limit = len(buffer) if self._first else self._chunk
        self._first = False
        count = min(len(buffer), limit, len(self._data))
        buffer[:count] = self._data[:count]
        self._data = self._data[count:]
        return count


def leftovers(folder: Path) -> list[str]:
    """Names of temp files left anywhere below `folder`."""
    return [path.name for path in folder.rglob("*") if path.name.startswith(".tmp-")]


def test_put_and_read_bytes(storage: Storage) -> None:
    storage.put_bytes("a/b/data.bin", DATA)
    assert storage.read_bytes("a/b/data.bin") == DATA
    storage.put_bytes("a/b/data.bin", b"replaced")
    assert storage.read_bytes("a/b/data.bin") == b"replaced"


def test_put_and_read_empty_object(storage: Storage) -> None:
    storage.put_bytes("empty", b"")
    assert storage.read_bytes("empty") == b""
    assert storage.read_bytes("empty", 0, 10) == b""
    assert storage.stat("empty") == ObjectInfo("empty", 0)


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, None),
        (0, 10),
        (5, 3),
        (100, None),
        (1000, 24),
        (1000, 100),
        (1023, 1),
        (1023, None),
        (7, 0),
    ],
)
def test_read_range(storage: Storage, offset: int, length: int | None) -> None:
    storage.put_bytes("data", DATA)
    expected = DATA[offset:] if length is None else DATA[offset : offset + length]
    assert storage.read_bytes("data", offset, length) == expected
    with storage.open_read("data", offset, length) as stream:
        assert stream.read() == expected
    opened = storage.open_sized("data", offset, length)
    with opened.stream:
        assert opened.size == len(expected) and opened.stream.read() == expected


@pytest.mark.parametrize(("offset", "length"), [(1024, None), (1024, 10), (5000, None), (5000, 1)])
def test_read_past_the_end_is_empty(storage: Storage, offset: int, length: int | None) -> None:
    storage.put_bytes("data", DATA)
    assert storage.read_bytes("data", offset, length) == b""
    opened = storage.open_sized("data", offset, length)
    with opened.stream:
        assert opened.size == 0 and opened.stream.read() == b""


@pytest.mark.parametrize(("offset", "length"), [(-1, None), (0, -1)])
def test_negative_range_is_refused(storage: Storage, offset: int, length: int | None) -> None:
    storage.put_bytes("data", DATA)
    with pytest.raises(ValueError):
        storage.read_bytes("data", offset, length)


def test_open_read_streams_in_chunks(storage: Storage) -> None:
    storage.put_bytes("data", DATA)
    with storage.open_read("data", 10, 500) as stream:
        chunks = iter(lambda: stream.read(64), b"")
        assert b"".join(chunks) == DATA[10:510]


def test_list_is_recursive_sorted_and_folder_scoped(storage: Storage) -> None:
    for key in ["b/z", "a/y/deep/x", "ab/c", "a/b", "top", "a/a"]:
        storage.put_bytes(key, key.encode())
    assert [info.key for info in storage.list()] == [
        "a/a",
        "a/b",
        "a/y/deep/x",
        "ab/c",
        "b/z",
        "top",
    ]
    assert storage.list("a") == storage.list("a/")
    assert storage.list("a") == [
        ObjectInfo("a/a", 3),
        ObjectInfo("a/b", 3),
        ObjectInfo("a/y/deep/x", 10),
    ]
    assert storage.list("a/y/deep") == [ObjectInfo("a/y/deep/x", 10)]
    assert storage.list("missing") == []
    assert storage.list("top") == []  # an object is not a folder


def test_list_of_empty_storage(storage: Storage) -> None:
    assert storage.list() == []
    assert storage.list("") == []


def test_exists_and_stat(storage: Storage) -> None:
    storage.put_bytes("dir/file.txt", b"hello")
    assert storage.exists("dir/file.txt")
    assert storage.stat("dir/file.txt") == ObjectInfo("dir/file.txt", 5)
    assert not storage.exists("dir/other.txt")
    assert not storage.exists("dir")  # a folder is not an object
    assert not storage.exists("dir/file.txt/below")


@pytest.mark.parametrize("operation", ["stat", "open_read", "read_bytes", "download_file"])
def test_missing_key_raises_object_not_found(
    storage: Storage, tmp_path: Path, operation: str
) -> None:
    storage.put_bytes("present/x", b"x")
    calls = {
        "stat": lambda key: storage.stat(key),
        "open_read": lambda key: storage.open_read(key, 1, 2),
        "read_bytes": lambda key: storage.read_bytes(key),
        "download_file": lambda key: storage.download_file(key, tmp_path / "out" / "file"),
    }
    for key in ("missing", "present/missing", "present"):
        with pytest.raises(ObjectNotFound) as caught:
            calls[operation](key)
        assert caught.value.key == key
        assert key in str(caught.value)
    assert not (tmp_path / "out" / "file").exists()


def test_delete(storage: Storage) -> None:
    storage.put_bytes("a/b/c", b"1")
    storage.put_bytes("a/d", b"2")
    storage.delete("a/b/c")
    assert not storage.exists("a/b/c")
    assert storage.list() == [ObjectInfo("a/d", 1)]
    storage.delete("a/b/c")  # missing is fine
    storage.delete("never/was")


def test_delete_prefix(storage: Storage) -> None:
    for key in ["sim/1/logs/a", "sim/1/logs/b", "sim/1/results/r/x", "sim/10/logs/a", "other"]:
        storage.put_bytes(key, b"x")
    assert storage.delete_prefix("sim/1") == 3
    assert [info.key for info in storage.list()] == ["other", "sim/10/logs/a"]
    assert storage.delete_prefix("sim/1/") == 0
    assert storage.delete_prefix("nothing/here") == 0


def test_put_stream_of_unknown_size_with_short_reads(storage: Storage) -> None:
    storage.put_stream("big", ShortReads(BIG))
    assert storage.stat("big").size == len(BIG)
    assert storage.read_bytes("big") == BIG


def test_put_stream_with_matching_size(storage: Storage) -> None:
    source = io.BytesIO(DATA)
    storage.put_stream("data", source, size=len(DATA))
    assert storage.read_bytes("data") == DATA
    assert not source.closed  # the caller's stream stays the caller's


@pytest.mark.parametrize("size", [len(DATA) - 1, len(DATA) + 1, 0])
def test_put_stream_with_wrong_size_stores_nothing(storage: Storage, size: int) -> None:
    storage.put_bytes("data", b"old")
    with pytest.raises(StorageError, match="declared"):
        storage.put_stream("data", ShortReads(DATA), size=size)
    with pytest.raises(StorageError, match="declared"):
        storage.put_stream("new", io.BytesIO(DATA), size=size)
    assert storage.read_bytes("data") == b"old"
    assert not storage.exists("new")


def test_upload_and_download_big_file(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(BIG)
    storage.upload_file(source, "files/big.bin")
    assert storage.stat("files/big.bin").size == len(BIG)
    target = tmp_path / "down" / "nested" / "big.bin"
    storage.download_file("files/big.bin", target)
    assert target.read_bytes() == BIG
    assert leftovers(tmp_path) == []


def test_download_file_is_atomic(storage: Storage, tmp_path: Path) -> None:
    target = tmp_path / "out" / "file.txt"
    target.parent.mkdir()
    target.write_bytes(b"previous")
    with pytest.raises(ObjectNotFound):
        storage.download_file("missing", target)
    assert target.read_bytes() == b"previous"
    storage.put_bytes("file.txt", b"new content")
    storage.download_file("file.txt", target)
    assert target.read_bytes() == b"new content"
    assert sorted(os.listdir(target.parent)) == ["file.txt"]


def make_tree(root: Path) -> dict[str, bytes]:
    """Write a nested folder below `root`; return relative path -> content of its regular files."""
    files = {
        "experiment.json": b'{"main_script": "main.py"}',
        "main.py": b"print('hi')\n" * 100,
        "empty.txt": b"",
        "models/brain/net.py": os.urandom(5000),
        "models/world.py": b"class World: pass\n",
    }
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    (root / "link.py").symlink_to(root / "main.py")
    (root / "linked-dir").symlink_to(root / "models", target_is_directory=True)
    return files


def test_upload_dir_uploads_and_verifies(storage: Storage, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "exp")
    storage.put_bytes("experiments/exp2/keep", b"k")
    infos = storage.upload_dir(tmp_path / "exp", "experiments/exp", workers=3)
    expected = [
        ObjectInfo(f"experiments/exp/{rel}", len(data)) for rel, data in sorted(files.items())
    ]
    assert infos == expected
    assert storage.list("experiments/exp") == expected
    for relative, content in files.items():
        assert storage.read_bytes(f"experiments/exp/{relative}") == content


def test_upload_dir_rejects_bad_names_before_uploading(storage: Storage, tmp_path: Path) -> None:
    make_tree(tmp_path / "exp")
    (tmp_path / "exp" / "bad\x01name").write_bytes(b"x")
    with pytest.raises(InvalidKey, match="control characters"):
        storage.upload_dir(tmp_path / "exp", "experiments/exp")
    assert storage.list() == []


def test_upload_dir_of_missing_folder(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a folder"):
        storage.upload_dir(tmp_path / "nope", "x")


def test_upload_dir_detects_a_bad_upload(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path / "exp")
    real_upload = storage.upload_file

    def truncating_upload(path: Path, key: str) -> None:
        if key.endswith("main.py"):
            return storage.put_bytes(key, b"truncated")
        return real_upload(path, key)

    monkeypatch.setattr(storage, "upload_file", truncating_upload)
    with pytest.raises(StorageError, match="failed verification: up/main.py$"):
        storage.upload_dir(tmp_path / "exp", "up")


def test_upload_dir_reraises_the_first_failure(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path / "exp")

    def failing_upload(path: Path, key: str) -> None:
        raise StorageError(f"boom {key}")

    monkeypatch.setattr(storage, "upload_file", failing_upload)
    with pytest.raises(StorageError, match="boom"):
        storage.upload_dir(tmp_path / "exp", "up", workers=2)


@pytest.mark.parametrize("workers", [0, -1])
def test_transfers_need_a_worker(storage: Storage, tmp_path: Path, workers: int) -> None:
    make_tree(tmp_path / "exp")
    with pytest.raises(ValueError, match="workers"):
        storage.upload_dir(tmp_path / "exp", "up", workers=workers)
    with pytest.raises(ValueError, match="workers"):
        storage.download_prefix("up", tmp_path / "down", workers=workers)


def test_download_prefix_recreates_nested_folders(storage: Storage, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "exp")
    storage.upload_dir(tmp_path / "exp", "runs/1")
    storage.put_bytes("runs/10/not-this", b"x")
    storage.put_bytes("runs/other", b"x")
    infos = storage.download_prefix("runs/1", tmp_path / "down", workers=4)
    assert [info.key for info in infos] == [f"runs/1/{rel}" for rel in sorted(files)]
    downloaded = {
        path.relative_to(tmp_path / "down").as_posix(): path.read_bytes()
        for path in (tmp_path / "down").rglob("*")
        if path.is_file()
    }
    assert downloaded == files
    assert leftovers(tmp_path / "down") == []


def test_download_prefix_of_root_and_of_nothing(storage: Storage, tmp_path: Path) -> None:
    assert storage.download_prefix("nothing", tmp_path / "empty") == []
    storage.put_bytes("a/b", b"1")
    storage.put_bytes("c", b"22")
    assert storage.download_prefix("", tmp_path / "all") == [
        ObjectInfo("a/b", 1),
        ObjectInfo("c", 2),
    ]
    assert (tmp_path / "all" / "a" / "b").read_bytes() == b"1"


def test_download_prefix_refuses_to_escape_through_a_symlink(
    storage: Storage, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "down").mkdir()
    (tmp_path / "down" / "sub").symlink_to(outside, target_is_directory=True)
    storage.put_bytes("p/sub/evil", b"x")
    with pytest.raises(StorageError, match="outside"):
        storage.download_prefix("p", tmp_path / "down")
    assert list(outside.iterdir()) == []


def test_download_prefix_detects_a_bad_download(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.put_bytes("p/a", b"abc")
    storage.put_bytes("p/b", b"def")
    monkeypatch.setattr(storage, "download_file", lambda key, path: Path(path).write_bytes(b"?"))
    with pytest.raises(StorageError, match="incomplete: p/a, p/b"):
        storage.download_prefix("p", tmp_path)


INVALID = ["", "/etc/passwd", "a/../b", "a//b", "a\\b", "a\x00", "a/"]


@pytest.mark.parametrize("key", INVALID)
def test_invalid_keys_are_refused_by_every_method(
    storage: Storage, tmp_path: Path, key: str
) -> None:
    (tmp_path / "local.txt").write_bytes(b"x")
    for call in [
        lambda: storage.stat(key),
        lambda: storage.exists(key),
        lambda: storage.open_read(key),
        lambda: storage.read_bytes(key, 1, 2),
        lambda: storage.put_stream(key, io.BytesIO(b"x")),
        lambda: storage.put_bytes(key, b"x"),
        lambda: storage.upload_file(tmp_path / "local.txt", key),
        lambda: storage.upload_file(tmp_path / "no-such-file", key),
        lambda: storage.download_file(key, tmp_path / "out"),
        lambda: storage.delete(key),
    ]:
        with pytest.raises(InvalidKey):
            call()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("prefix", ["/", "/abs", "a/../b", "a//", "..", "a\x00/"])
def test_invalid_prefixes_are_refused(storage: Storage, tmp_path: Path, prefix: str) -> None:
    make_tree(tmp_path / "exp")
    for call in [
        lambda: storage.list(prefix),
        lambda: storage.delete_prefix(prefix),
        lambda: storage.upload_dir(tmp_path / "exp", prefix),
        lambda: storage.download_prefix(prefix, tmp_path / "down"),
    ]:
        with pytest.raises(InvalidKey, match="invalid prefix"):
            call()
    assert storage.list() == []


def test_check_passes(storage: Storage) -> None:
    storage.check()
    assert storage.list() == []  # the probe leaves nothing behind


def test_describe_round_trips_through_open_storage(
    storage: Storage, request: pytest.FixtureRequest
) -> None:
    if not isinstance(storage, LocalStorage):
        request.getfixturevalue(
            "s3_env"
        )  # the new client finds the server through AWS_ENDPOINT_URL
    storage.put_bytes("k", b"v")
    again = open_storage(storage.describe())
    assert type(again) is type(storage)
    assert again.describe() == storage.describe()
    assert again.read_bytes("k") == b"v"
    assert storage.describe() in repr(storage)
