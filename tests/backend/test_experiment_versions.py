"""Experiment versions: a reader sees one whole version while it is replaced, a killed
upload leaves nothing visible, old and partial versions are collected."""
from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import pytest
import requests

from backend.experiments import PLAIN_VERSION, ExperimentStore, new_version
from backend.version_cache import VersionCache
from storage import LocalStorage
from tests.support import Backend, HealthProbe, loop_experiment, make_archive, wait_until

FILES = 400
GZIP = {"Content-Type": "application/gzip"}


def _generation(gen: int, files: int = FILES) -> dict[str, str]:
    """An experiment whose every file says which generation it belongs to, and whose
    file names differ between generations, so a mix shows in contents and in names."""
    return {**loop_experiment(), "gen.txt": str(gen),
            **{f"data/g{gen}/f{i}.txt": str(gen) for i in range(files)}}


def _folder(tmp: Path, gen: int) -> Path:
    folder = tmp / f"gen{gen}"
    for path, text in _generation(gen).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("cached", [None, "kept", "fetched"],
                         ids=["from-storage", "through-the-cache", "fetched-into-the-cache"])
def test_readers_see_one_whole_version_while_it_is_replaced(tmp_path: Path,
                                                            cached: str | None) -> None:
    """Through the cache, each version is either kept from its upload (and may be fetched
    at the same time by a reader that saw the new pointer first) or, stored by another
    backend, fetched into it."""
    cache = VersionCache(tmp_path / "cache", 1 << 30) if cached else None
    store = ExperimentStore(LocalStorage(tmp_path / "storage"), tmp_path / "scratch", 1 << 30,
                            grace=60, cache=cache)
    writer = store if cached != "fetched" else \
        ExperimentStore(store.storage, tmp_path / "scratch", 1 << 30, grace=60)
    folders = [_folder(tmp_path, gen) for gen in range(4)]
    writer.put_dir("big", folders[0])
    done, problems, reads = threading.Event(), [], []

    def read(reader: int) -> None:
        for attempt in range(1000):
            if done.is_set():
                return
            dest = tmp_path / f"read{reader}-{attempt}"
            if cached:  # as a run fetches: under a lease, through the cache
                version, count = store.fetch("big", dest)
            else:
                version, prefix = store.resolve("big")
                count = len(store.storage.download_prefix(prefix, dest))
            gens = {p.read_text() for p in (dest / "data").rglob("*.txt")}
            names = {p.parent.name for p in (dest / "data").rglob("*.txt")}
            if count != FILES + 4 or len(gens) != 1 or names != {f"g{gens.pop()}"}:
                problems.append((version, count, sorted(names)))
            reads.append(version)

    readers = [threading.Thread(target=read, args=(n,)) for n in range(3)]
    for thread in readers:
        thread.start()
    for folder in folders[1:]:
        read_before = len(reads)
        # Replaced while reads are going on, each version read once at least.
        wait_until(lambda n=read_before: len(reads) > n or problems, 60, "a read")
        writer.put_dir("big", folder)
    done.set()
    for thread in readers:
        thread.join(60)
    assert not problems, problems[:3]
    assert len(set(reads)) > 1, "the readers never saw a replacement"


@pytest.mark.slow
def test_describe_over_http_never_shows_a_mix(backend: Backend) -> None:
    bodies = [make_archive(_generation(gen)) for gen in range(3)]
    assert backend.put("/v1/experiments/big", data=bodies[0], headers=GZIP).status_code == 201
    done, seen, problems = threading.Event(), [], []

    def describe() -> None:
        while not done.is_set():
            files = backend.get("/v1/experiments/big").json()["files"]
            folders = {f["path"].split("/")[1] for f in files if f["path"].startswith("data/")}
            seen.append(tuple(folders))
            if len(folders) != 1 or len(files) != FILES + 4:
                problems.append((len(files), sorted(folders)))

    reader = threading.Thread(target=describe)
    with HealthProbe(backend.url) as probe:
        reader.start()
        for body in bodies[1:] * 2:
            assert backend.put("/v1/experiments/big", data=body, headers=GZIP).status_code == 200
        done.set()
        reader.join(30)
    assert not problems, problems[:3]
    assert len(set(seen)) > 1
    probe.assert_fast(worst=2.0)


def _versions(data_dir: Path, name: str) -> set[str]:
    folder = data_dir / "storage" / "experiments" / name / "versions"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.mark.slow
def test_a_backend_killed_mid_upload_leaves_the_old_version_whole(make_backend) -> None:
    backend = make_backend().start()
    assert backend.upload("exp", loop_experiment()).status_code == 201
    before = backend.get("/v1/experiments/exp").json()
    assert backend.upload("fresh", loop_experiment()).status_code == 201
    backend.delete("/v1/experiments/fresh")
    big = make_archive({**loop_experiment(), **{f"f{i}.bin": bytes([i % 251]) * 4096
                                               for i in range(4000)}})

    def upload() -> None:
        with contextlib.suppress(requests.RequestException):  # the backend dies under it
            backend.put("/v1/experiments/exp", data=big, headers=GZIP, timeout=60)

    uploader = threading.Thread(target=upload)
    uploader.start()
    storage_dir = backend.data_dir / "storage" / "experiments" / "exp" / "versions"

    def partial() -> bool:
        new = _versions(backend.data_dir, "exp") - {before["version"]}
        return any(len(list((storage_dir / v).rglob("*"))) > 10 for v in new)

    wait_until(partial, 30, "the new version to be half uploaded")
    backend.kill9()
    uploader.join(10)
    assert len(_versions(backend.data_dir, "exp")) == 2  # the partial one is there...
    restarted = Backend(backend.data_dir).start()
    try:
        assert restarted.get("/v1/experiments/exp").json() == before
        assert [e["name"] for e in restarted.get("/v1/experiments").json()["experiments"]] \
            == ["exp"]
        # ... and start-up removed its objects; what is left of it are temp files of the
        # writes the kill cut short, which go once they are an hour old (see leftovers).
        storage = LocalStorage(restarted.data_dir / "storage")
        for version in _versions(restarted.data_dir, "exp") - {before["version"]}:
            assert not storage.list(f"experiments/exp/versions/{version}/")
            assert all(p.name.startswith(".tmp-") for p in (storage_dir / version).rglob("*")
                       if p.is_file())
        storage.remove_stale_temp_files(0)
        assert {p.name for p in storage_dir.iterdir() if any(p.rglob("*"))} <= \
            {before["version"]}
    finally:
        restarted.cleanup()


def test_plain_folders_are_experiments_until_a_version_replaces_them(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    store = ExperimentStore(storage, tmp_path / "scratch", 1 << 20, grace=0)
    for path, text in loop_experiment().items():  # what `aws s3 sync` leaves
        storage.put_bytes(f"experiments/synced/{path}", text.encode())
    assert store.resolve("synced") == (PLAIN_VERSION, "experiments/synced/")
    assert [e["name"] for e in store.list()] == ["synced"]
    with store.lease("synced"):
        store.put_dir("synced", _folder(tmp_path, 1))
        assert storage.exists("experiments/synced/main.py")  # leased: kept
    version, prefix = store.resolve("synced")
    assert prefix == f"experiments/synced/versions/{version}/"
    store.collect()
    assert not storage.exists("experiments/synced/main.py")
    assert {f["path"] for f in store.describe("synced")["files"]} == set(_generation(1))


def test_old_versions_go_after_the_grace_period_unless_leased(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    store = ExperimentStore(storage, tmp_path / "scratch", 1 << 20, grace=0.2)
    store.put_dir("e", _folder(tmp_path, 0))
    with store.lease("e") as (first, _):
        store.put_dir("e", _folder(tmp_path, 1))
        time.sleep(0.3)  # past the 0.2 s grace: the time itself is what is tested
        store.collect()
        assert storage.list(f"experiments/e/versions/{first}/")  # a run is fetching it
    store.collect()
    assert not storage.list(f"experiments/e/versions/{first}/")
    pointer = json.loads(storage.read_bytes("experiments/e/current.json"))
    assert store.resolve("e")[0] == pointer["version"] != first


def test_a_version_without_a_pointer_is_invisible(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    store = ExperimentStore(storage, tmp_path / "scratch", 1 << 20)
    for path, text in loop_experiment().items():
        storage.put_bytes(f"experiments/half/versions/{new_version()}/{path}", text.encode())
    assert store.list() == []
    with pytest.raises(Exception, match="no experiment named 'half'"):
        store.resolve("half")
    assert store.collect() == 0 and store.collect(now=float("inf")) == 3


SEEN_SCRIPT = '''
import json
from pathlib import Path
files = sorted(Path("data").rglob("*.txt"))
seen = {"gens": sorted({p.read_text() for p in files}),
        "folders": sorted({p.parent.name for p in files}), "count": len(files),
        "gen": Path("gen.txt").read_text()}
(sim.results_dir / "seen.json").write_text(json.dumps(seen))
'''


def _seen_experiment(gen: int) -> dict[str, str]:
    return {"experiment.json": json.dumps({"main_script": "main.py"}), "main.py": SEEN_SCRIPT,
            "gen.txt": str(gen), **{f"data/g{gen}/f{i}.txt": str(gen) for i in range(FILES)}}


@pytest.mark.slow
def test_runs_started_while_it_is_replaced_each_get_one_whole_version(backend: Backend) -> None:
    bodies = [make_archive(_seen_experiment(gen)) for gen in range(3)]
    assert backend.put("/v1/experiments/big", data=bodies[0], headers=GZIP).status_code == 201
    done, statuses = threading.Event(), []

    def replace() -> None:
        for attempt in range(40):
            if done.is_set():
                return
            body = bodies[1 + attempt % 2]
            statuses.append(backend.put("/v1/experiments/big", data=body,
                                        headers=GZIP).status_code)

    replacer = threading.Thread(target=replace)
    replacer.start()
    try:
        sims = [backend.create("big", state="started")["id"] for _ in range(6)]
        records = [backend.wait_state(sim_id, "completed", "failed", timeout=60)
                   for sim_id in sims]
    finally:
        done.set()
        replacer.join(60)
    assert [r["error"] for r in records] == [None] * len(sims)
    assert statuses and set(statuses) == {200}, statuses
    gens = set()
    for sim_id in sims:
        backend.wait_uploaded(sim_id)
        seen = backend.get(f"/v1/simulations/{sim_id}/results/seen.json").json()
        assert seen["count"] == FILES and seen["gens"] == [seen["gen"]], seen
        assert seen["folders"] == [f"g{seen['gen']}"], seen
        gens.add(seen["gen"])
    assert gens, "no run reported what it fetched"
