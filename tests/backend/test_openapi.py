"""The OpenAPI document describes the live API: fuzzed with schemathesis."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from backend.app import ROUTES
from tests.support import ROOT, Backend

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance")


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Backend]:
    server = Backend(tmp_path / "data",
                     args=("--examples-dir", str(ROOT / "examples"), "--max-running", "4")).start()
    try:
        yield server
    finally:
        server.cleanup()


def test_every_route_is_documented(seeded: Backend) -> None:
    spec = seeded.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    documented = set(spec["paths"])
    for _, rule in ROUTES:
        path = re.sub(r"<(?:path:)?(\w+)>", r"{\1}", rule)
        assert path in documented, f"{rule} is not in /openapi.json"
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                assert "default" in operation["responses"], (method, path)


def test_schemathesis_finds_no_server_error_and_no_mismatch(seeded: Backend) -> None:
    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    result = subprocess.run(
        [cli, "run", f"{seeded.url}/openapi.json", "--checks", CHECKS, "--max-examples", "25",
         "--workers", "2", "--seed", "20261122", "--no-color",
         # Event streams do not end (they are tested in test_events.py).
         "--exclude-path-regex", "events$",
         "--header", f"Authorization: Bearer {seeded.token}"],
        capture_output=True, text=True, timeout=240, cwd=seeded.data_dir)
    log = seeded.log()
    failures = result.stdout.split("FAILURES", 1)[-1][:4000]
    assert result.returncode == 0, failures + log[log.find("Traceback"):][:4000]
    assert "Traceback" not in log, log[log.find("Traceback"):][:4000]
