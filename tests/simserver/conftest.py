"""Fixtures for the simulation-server tests: experiment folders, run directories and
import isolation for the experiment modules the engines load by name.

Polling with a deadline is ``tests.support.wait_until``, shared with the other packages.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.atomic import write_json_atomic
from lifecycle.messages import (
    EXPERIMENT_DIR,
    LOGS_DIR,
    RUN_CONFIG_FILE,
    RunConfig,
)


def write_files(folder: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path -> text) below ``folder``; return ``folder``."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def make_run_dir(root: Path, files: dict[str, str], sim_id: str = "sim-1",
                 **config: Any) -> Path:
    """Prepare ``root/runs/<sim_id>/`` as the backend would before spawning a simserver.

    ``files`` become the ``experiment/`` folder; ``config`` overrides ``run.json`` fields.
    """
    run_dir = root / "runs" / sim_id
    write_files(run_dir / EXPERIMENT_DIR, files)
    (run_dir / LOGS_DIR).mkdir(parents=True)
    run = RunConfig(**{"sim_id": sim_id, "experiment": "loop", "main_script": "main.py",
                       **config})
    write_json_atomic(run_dir / RUN_CONFIG_FILE, run.to_dict())
    return run_dir


@pytest.fixture
def experiment(tmp_path: Path) -> Iterator[Path]:
    """An empty experiment folder; afterwards ``sys.path`` is restored and the modules
    imported from the folder are forgotten, so no test sees another's modules."""
    folder = tmp_path / EXPERIMENT_DIR
    folder.mkdir()
    path = list(sys.path)
    try:
        yield folder
    finally:
        sys.path[:] = path
        for name, module in list(sys.modules.items()):
            if _loaded_from(module, folder):
                del sys.modules[name]


def _loaded_from(module: Any, folder: Path) -> bool:
    places = [getattr(module, "__file__", None) or "", *getattr(module, "__path__", [])]
    return any(str(place).startswith(f"{folder}{os.sep}") for place in places)


@pytest.fixture
def nest_kernel(experiment: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Build kernels from an experiment.json dict in ``experiment``, with its files.

    Call it as ``nest_kernel(config, files, params)``. The experiment folder is the working
    directory, as in a simulation server (NEST writes its recorder files there), and every
    kernel built is shut down afterwards, so NEST is free for the next test.
    """
    from simserver.kernel import build_kernel

    monkeypatch.chdir(experiment)
    built: list[Any] = []

    def build(config: dict[str, Any], files: dict[str, str] | None = None,
              params: dict[str, Any] | None = None) -> Any:
        write_files(experiment, files or {})
        kernel = build_kernel(config, experiment, params or {})
        built.append(kernel)
        return kernel

    try:
        yield build
    finally:
        for kernel in built:
            kernel.shutdown()
