"""LocalStorage specifics: atomic files, the root boundary, folder housekeeping."""

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
    StorageError,
    StorageUnavailable,
)


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def test_objects_are_plain_files(local: LocalStorage) -> None:
    local.put_bytes("a/b.txt", b"hello")
    assert (local.root / "a" / "b.txt").read_bytes() == b"hello"
    assert local.describe() == local.root.as_uri()


def test_a_failed_write_keeps_the_old_object_and_no_temp_file(local: LocalStorage) -> None:
    local.put_bytes("a/obj", b"old")

    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            raise OSError("source broke")

    with pytest.raises(StorageError, match="source broke"):
        local.put_stream("a/obj", Broken())
    assert local.read_bytes("a/obj") == b"old"
    assert sorted(os.listdir(local.root / "a")) == ["obj"]


def test_list_ignores_temp_files_empty_folders_and_symlinks(
    local: LocalStorage, tmp_path: Path
) -> None:
    local.put_bytes("a/real", b"1")
    (local.root / "a" / ".tmp-abc123").write_bytes(b"partial")
    (local.root / "empty" / "nested").mkdir(parents=True)
    (local.root / "a" / "link").symlink_to(local.root / "a" / "real")
    (local.root / "bad\x01name").write_bytes(b"x")
    assert local.list() == [ObjectInfo("a/real", 1)]


def test_keys_cannot_reach_outside_the_root(local: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    local.root.mkdir()
    (local.root / "link").symlink_to(outside, target_is_directory=True)
    for call in [
        lambda: local.read_bytes("link/secret"),
        lambda: local.stat("link/secret"),
        lambda: local.put_bytes("link/new", b"x"),
        lambda: local.delete("link/secret"),
    ]:
        with pytest.raises(InvalidKey, match="outside the storage folder"):
            call()
    with pytest.raises(InvalidKey, match="invalid prefix"):
        local.list("link")
    assert sorted(os.listdir(outside)) == ["secret"]


def test_delete_prunes_empty_folders_up_to_the_root(local: LocalStorage) -> None:
    local.put_bytes("a/b/c/d", b"1")
    local.put_bytes("a/keep", b"2")
    local.delete("a/b/c/d")
    assert not (local.root / "a" / "b").exists()
    assert (local.root / "a" / "keep").exists()
    local.delete("a/keep")
    assert local.root.is_dir() and os.listdir(local.root) == []


def test_delete_of_a_folder_is_a_no_op(local: LocalStorage) -> None:
    local.put_bytes("a/b", b"1")
    local.delete("a")
    assert local.exists("a/b")


def test_an_object_cannot_also_be_a_folder(local: LocalStorage) -> None:
    local.put_bytes("a", b"1")
    with pytest.raises(StorageError, match="cannot write 'a/b'"):
        local.put_bytes("a/b", b"2")
    local.put_bytes("c/d", b"1")
    with pytest.raises(StorageError, match="cannot write 'c'"):
        local.put_bytes("c", b"2")
    with pytest.raises(ObjectNotFound):
        local.read_bytes("c")


def test_check_creates_the_root(local: LocalStorage) -> None:
    assert not local.root.exists()
    local.check()
    assert local.root.is_dir() and os.listdir(local.root) == []


def test_check_fails_when_the_root_cannot_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageUnavailable, match="not writable"):
        LocalStorage(tmp_path / "file" / "store").check()


def test_relative_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = LocalStorage(Path("rel"))
    assert storage.root == tmp_path / "rel"
    assert storage.describe().startswith("file:///")


@pytest.mark.parametrize("durable, syncs", [(True, 1), (False, 0)])
def test_a_json_file_is_replaced_whole_and_synced_only_when_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool, syncs: int) -> None:
    from storage import write_json_atomic

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    path = tmp_path / "run" / "server.json"
    write_json_atomic(path, {"pid": 1}, durable=durable)
    write_json_atomic(path, {"pid": 2, "port": 5}, durable=durable)
    assert path.read_text() == '{"pid":2,"port":5}' and len(synced) == 2 * syncs
    assert [p.name for p in path.parent.iterdir()] == ["server.json"]  # no temp file left
    assert path.stat().st_mode & 0o777 == 0o600
