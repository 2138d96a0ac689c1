from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.browser import WIDE, Dashboard, chromium
from tests.support import ROOT, Backend, loop_experiment


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    """A real backend over HTTP with its own data dir; everything it started is killed."""
    server = Backend(tmp_path / "data").start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Backend]:
    """A real backend with the examples/ experiments in its storage."""
    server = Backend(tmp_path / "data", args=("--examples-dir", str(ROOT / "examples"))).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def loop(backend: Backend) -> str:
    """Upload the counter-loop experiment (long sim-time timeout, 2 ms per step)."""
    response = backend.upload("loop", loop_experiment(sim_time=1e9))
    assert response.status_code == 201, response.text
    return "loop"


@pytest.fixture
def make_backend(tmp_path: Path) -> Iterator[Callable[..., Backend]]:
    """Return ``make(env=, args=)``: a Backend (not started) with its own data dir;
    every one made is stopped, with all it started, at teardown."""
    made: list[Backend] = []

    def make(*, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> Backend:
        backend = Backend(tmp_path / f"data{len(made)}", env=env, args=args)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium for the module's tests (skipped without one, except in CI)."""
    with chromium() as browser:
        yield browser


@pytest.fixture
def dashboard(browser: Any, seeded: Backend) -> Iterator[Dashboard]:
    """A wide browser tab on the dashboard of a seeded backend."""
    tab = Dashboard(browser, seeded, WIDE)
    try:
        yield tab
    finally:
        tab.close()
