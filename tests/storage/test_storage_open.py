"""open_storage URL parsing, and importing the package without boto3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from storage import InvalidKey, LocalStorage, S3Storage, StorageError, open_storage

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("file:///srv/store", "/srv/store"),
        ("file:///srv/store/", "/srv/store"),
        ("file://localhost/srv/store", "/srv/store"),
        ("file:///srv/my%20store", "/srv/my store"),
        ("FILE:///srv/store", "/srv/store"),
    ],
)
def test_file_urls(url: str, root: str) -> None:
    storage = open_storage(url)
    assert isinstance(storage, LocalStorage)
    assert storage.root == Path(root)


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://bucket", "bucket", ""),
        ("s3://bucket/", "bucket", ""),
        ("s3://bucket/sim", "bucket", "sim/"),
        ("s3://bucket/team/sim/", "bucket", "team/sim/"),
        ("s3://my.bucket-1/a%20b", "my.bucket-1", "a b/"),
    ],
)
def test_s3_urls(url: str, bucket: str, prefix: str) -> None:
    storage = open_storage(url)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == (bucket, prefix)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/srv/store",
        "relative/path",
        "file://relative/path",
        "file:relative",
        "http://example.com/x",
        "gs://bucket/x",
        "s3://",
        "s3:///prefix",
        "s3://bucket/x?endpoint=http://127.0.0.1",
        "file:///srv/store#frag",
    ],
)
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(StorageError, match="unsupported storage URL"):
        open_storage(url)


@pytest.mark.parametrize("url", ["s3://bucket/a/../b", "s3://bucket//a", "s3://bucket/a//"])
def test_s3_url_with_a_bad_prefix(url: str) -> None:
    with pytest.raises(InvalidKey, match="invalid prefix"):
        open_storage(url)


@pytest.mark.parametrize(
    "url", ["s3://bucket", "s3://bucket/a/b", "s3://bucket/with%20space/100%25"]
)
def test_s3_describe_round_trips(url: str) -> None:
    assert open_storage(url).describe() == url


def test_package_imports_without_boto3(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.modules['boto3'] = sys.modules['botocore'] = None\n"
        "import storage\n"
        f"local = storage.open_storage({tmp_path.as_uri()!r})\n"
        "local.put_bytes('k', b'v'); assert local.read_bytes('k') == b'v'\n"
        "try:\n"
        "    storage.open_storage('s3://bucket')\n"
        "except storage.StorageError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "needs boto3" in result.stdout
