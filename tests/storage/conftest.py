"""Fixtures for the storage tests: every backend behind one `storage` fixture."""
from __future__ import annotations

from pathlib import Path

import pytest

from storage import LocalStorage, S3Storage, Storage


@pytest.fixture(params=["local", "s3", "s3-prefixed"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Each storage backend in turn, empty; the S3 ones talk HTTP to the moto server."""
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    prefix = "deployments/test" if request.param == "s3-prefixed" else ""
    return S3Storage(bucket, prefix, client=request.getfixturevalue("s3_client"))
