"""The local copies of experiment versions: a version is fetched from storage once, a
replaced experiment gives the new version, a fetch cut short leaves nothing behind, a
deleted experiment's copies go, the copies stay within their bound."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.experiments import ExperimentStore
from backend.version_cache import VersionCache
from storage import LocalStorage, StorageError, StorageUnavailable


class CountingStorage(LocalStorage):
    """Local storage that counts the fetches of a prefix, and fails when told to."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.downloads = 0
        self.fail_after: int | None = None  # files downloaded before an outage

    def download_prefix(self, prefix, local_dir, *, workers=None):  # type: ignore[override]
        self.downloads += 1
        return super().download_prefix(prefix, local_dir, workers=1)

    def download_file(self, key: str, path: Path) -> None:
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise StorageUnavailable("storage went away")
            self.fail_after -= 1
        super().download_file(key, path)


def folder(tmp: Path, name: str, files: dict[str, str]) -> Path:
    root = tmp / "src" / name
    for path, text in {"experiment.json": json.dumps({"main_script": "main.py"}),
                       "main.py": "pass\n", **files}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def contents(dest: Path) -> dict[str, str]:
    return {str(p.relative_to(dest)): p.read_text() for p in sorted(dest.rglob("*"))
            if p.is_file()}


@pytest.fixture
def store(tmp_path: Path) -> ExperimentStore:
    storage = CountingStorage(tmp_path / "storage")
    return ExperimentStore(storage, tmp_path / "scratch", 1 << 30,
                           cache=VersionCache(tmp_path / "cache", 1 << 30))


def test_a_version_comes_from_storage_once_and_a_replaced_one_anew(
        store: ExperimentStore, tmp_path: Path) -> None:
    store.put_dir("exp", folder(tmp_path, "v1", {"data/a.txt": "one"}))
    version, count = store.fetch("exp", tmp_path / "run1")
    assert count == 3 and contents(tmp_path / "run1")["data/a.txt"] == "one"
    assert store.fetch("exp", tmp_path / "run2") == (version, 3)
    assert contents(tmp_path / "run2") == contents(tmp_path / "run1")
    assert store.storage.downloads == 1
    # A run changing its copy changes nothing for the next one.
    (tmp_path / "run2" / "data" / "a.txt").write_text("changed by a script")
    store.fetch("exp", tmp_path / "run3")
    assert contents(tmp_path / "run3")["data/a.txt"] == "one"

    store.put_dir("exp", folder(tmp_path, "v2", {"data/b.txt": "two"}))
    new, count = store.fetch("exp", tmp_path / "run4")
    assert new != version and count == 3 and store.storage.downloads == 2
    assert "data/a.txt" not in contents(tmp_path / "run4")
    assert contents(tmp_path / "run4")["data/b.txt"] == "two"
    kept = [p for p in (tmp_path / "cache").glob("*/exp/*")]
    assert len(kept) == 1  # the old version's copy went when the new one came


def test_a_fetch_cut_short_by_an_outage_leaves_no_copy(store: ExperimentStore,
                                                        tmp_path: Path) -> None:
    store.put_dir("exp", folder(tmp_path, "v1", {"data/a.txt": "one", "data/b.txt": "b"}))
    store.storage.fail_after = 2
    with pytest.raises(StorageError):
        store.fetch("exp", tmp_path / "run1")
    assert list((tmp_path / "cache").glob("*/exp/*")) == []  # nothing half made stays
    store.storage.fail_after = None
    assert store.fetch("exp", tmp_path / "run2")[1] == 4
    assert contents(tmp_path / "run2")["data/b.txt"] == "b"


def test_a_deleted_experiment_leaves_no_copy_and_a_new_one_of_its_name_is_fetched(
        store: ExperimentStore, tmp_path: Path) -> None:
    store.put_dir("exp", folder(tmp_path, "v1", {"a.txt": "old"}))
    store.fetch("exp", tmp_path / "run1")
    store.delete("exp")
    assert list((tmp_path / "cache").glob("*/exp/*")) == []
    store.put_dir("exp", folder(tmp_path, "v2", {"a.txt": "new"}))
    store.fetch("exp", tmp_path / "run2")
    assert contents(tmp_path / "run2")["a.txt"] == "new"


def test_copies_stay_within_their_bound_least_recently_used_going_first(
        tmp_path: Path) -> None:
    storage = CountingStorage(tmp_path / "storage")
    store = ExperimentStore(storage, tmp_path / "scratch", 1 << 30,
                            cache=VersionCache(tmp_path / "cache", 2500))
    for name in ("a", "b", "c"):
        store.put_dir(name, folder(tmp_path, name, {"data.bin": "x" * 1000}))
    store.fetch("a", tmp_path / "run-a")
    store.fetch("b", tmp_path / "run-b")
    store.fetch("a", tmp_path / "run-a2")  # a is now the more recently used
    store.fetch("c", tmp_path / "run-c")   # over 2500 bytes: b goes
    cached = {p.parent.name for p in (tmp_path / "cache").glob("*/*/*")}
    assert cached == {"a", "c"} and storage.downloads == 3


def test_a_copy_left_half_made_by_a_crash_is_removed_at_start(tmp_path: Path) -> None:
    half = tmp_path / "cache" / "0123" / "exp" / ".filling-x1"
    half.mkdir(parents=True)
    (half / "main.py").write_text("pa")
    VersionCache(tmp_path / "cache", 1 << 20)
    assert not half.exists()


def test_the_plain_layout_is_always_fetched_from_storage(store: ExperimentStore,
                                                         tmp_path: Path) -> None:
    src = folder(tmp_path, "plain", {"a.txt": "1"})
    for path in src.rglob("*"):
        if path.is_file():
            store.storage.put_bytes(f"experiments/plain/{path.relative_to(src)}",
                                      path.read_bytes())
    store.fetch("plain", tmp_path / "run1")
    store.fetch("plain", tmp_path / "run2")
    assert store.storage.downloads == 2
    assert list((tmp_path / "cache").glob("*/plain/*")) == []
