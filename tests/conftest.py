"""Fixtures shared by every test package: a real S3 server (moto) on loopback."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import MotoServer, aws_env, boto3_client


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Run a moto S3 server as a subprocess on a free 127.0.0.1 port; yield its endpoint URL."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture
def own_s3_server(tmp_path: Path) -> Iterator[MotoServer]:
    """A moto server for this test alone, so it may freeze it (SIGSTOP) without hurting others."""
    server = MotoServer(tmp_path / "own-moto.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3's standard configuration at the moto server; return the endpoint URL.

    Child processes started by the test inherit the same variables.
    """
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in aws_env(s3_server).items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture(scope="session")
def s3_client(s3_server: str) -> Any:
    """A boto3 S3 client for the moto server (test credentials, explicit endpoint)."""
    return boto3_client(s3_server)


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """Create a fresh, empty bucket on the moto server and return its name."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name
