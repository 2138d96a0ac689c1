"""The local copies of experiment versions: a version is fetched from storage once (and
one this backend stored, not at all), a replaced experiment gives the new version, a
fetch cut short leaves nothing behind, a deleted experiment's copies go, the copies stay
within their bound."""
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


def put_elsewhere(store: ExperimentStore, name: str, src: Path) -> None:
    """Store a version as another backend sharing the storage would: this one has no
    copy of it."""
    ExperimentStore(store.storage, store.scratch_dir, 1 << 30).put_dir(name, src)


def test_a_version_just_stored_is_not_fetched_back(store: ExperimentStore,
                                                   tmp_path: Path) -> None:
    store.put_dir("exp", folder(tmp_path, "v1", {"data/a.txt": "one"}))
    version, count = store.fetch("exp", tmp_path / "run1")
    assert count == 3 and store.storage.downloads == 0
    assert contents(tmp_path / "run1") == contents(tmp_path / "src" / "v1")
    assert version == store.resolve("exp")[0]


def test_a_file_changed_since_its_upload_is_not_kept(store: ExperimentStore,
                                                     tmp_path: Path) -> None:
    src = folder(tmp_path, "v1", {"a.txt": "one"})
    put_elsewhere(store, "exp", src)
    version, prefix = store.resolve("exp")
    stored = store.storage.list(prefix)
    (src / "a.txt").write_text("changed after the upload")
    assert not store.cache.seed(store.storage, "exp", version, prefix, src, stored)
    assert list((tmp_path / "cache").glob("*/exp/*")) == []
    store.fetch("exp", tmp_path / "run1")
    assert contents(tmp_path / "run1")["a.txt"] == "one" and store.storage.downloads == 1


def test_a_version_comes_from_storage_once_and_a_replaced_one_anew(
        store: ExperimentStore, tmp_path: Path) -> None:
    put_elsewhere(store, "exp", folder(tmp_path, "v1", {"data/a.txt": "one"}))
    version, count = store.fetch("exp", tmp_path / "run1")
    assert count == 3 and contents(tmp_path / "run1")["data/a.txt"] == "one"
    assert store.fetch("exp", tmp_path / "run2") == (version, 3)
    assert contents(tmp_path / "run2") == contents(tmp_path / "run1")
    assert store.storage.downloads == 1
    # A run changing its copy changes nothing for the next one.
    (tmp_path / "run2" / "data" / "a.txt").write_text("changed by a script")
    store.fetch("exp", tmp_path / "run3")
    assert contents(tmp_path / "run3")["data/a.txt"] == "one"

    put_elsewhere(store, "exp", folder(tmp_path, "v2", {"data/b.txt": "two"}))
    new, count = store.fetch("exp", tmp_path / "run4")
    assert new != version and count == 3 and store.storage.downloads == 2
    assert "data/a.txt" not in contents(tmp_path / "run4")
    assert contents(tmp_path / "run4")["data/b.txt"] == "two"
    kept = [p for p in (tmp_path / "cache").glob("*/exp/*")]
    assert len(kept) == 1  # the old version's copy went when the new one came


def test_a_fetch_cut_short_by_an_outage_leaves_no_copy(store: ExperimentStore,
                                                        tmp_path: Path) -> None:
    put_elsewhere(store, "exp", folder(tmp_path, "v1", {"data/a.txt": "one", "data/b.txt": "b"}))
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
        put_elsewhere(store, name, folder(tmp_path, name, {"data.bin": "x" * 1000}))
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


def test_a_runs_checks_read_the_copy_and_storage_only_for_the_version(
        store: ExperimentStore, tmp_path: Path) -> None:
    """experiment.json and whether the main script is there come from the copy of the
    version storage names; a copy's missing file is missing (storage is not asked)."""
    class Watched(CountingStorage):
        reads: list[str] = []

        def read_bytes(self, key: str) -> bytes:
            self.reads.append(key)
            return super().read_bytes(key)

        def exists(self, key: str) -> bool:
            self.reads.append(key)
            return super().exists(key)

    store.storage.__class__ = Watched
    store.put_dir("exp", folder(tmp_path, "v1", {"a.txt": "1"}))
    Watched.reads.clear()
    version, prefix = store.resolve("exp")
    assert store.config("exp", prefix, version) == {"main_script": "main.py"}
    assert store.has_file("exp", "main.py", prefix, version)
    assert not store.has_file("exp", "gone.py", prefix, version)
    assert [key for key in Watched.reads if not key.endswith("current.json")] == []
    put_elsewhere(store, "exp", folder(tmp_path, "v2", {"b.txt": "2"}))  # no copy here
    version, prefix = store.resolve("exp")
    assert store.has_file("exp", "b.txt", prefix, version)
    assert store.config("exp", prefix, version)["main_script"] == "main.py"
    assert f"{prefix}b.txt" in Watched.reads and f"{prefix}experiment.json" in Watched.reads
