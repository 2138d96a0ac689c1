"""A run's limits: resolved at launch, and taken again when a backend adopts its server."""
from __future__ import annotations

from pathlib import Path

from backend.config import Config
from backend.limits import MIB, Limits, adopted, resolve

EXPERIMENT = {"timeout": {"real_time": 50}, "limits": {"memory_mb": 600, "start_timeout": 30}}


def config(tmp_path: Path) -> Config:
    return Config(data_dir=tmp_path, real_time_limit=100, memory_limit_mb=800,
                  start_timeout=120)


def test_post_wins_over_experiment_json_which_wins_over_the_backend(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert resolve(cfg, EXPERIMENT, {"real_time": 5}, {"memory_mb": 300}) == \
        Limits(real_time=5.0, memory_bytes=300 * MIB, start_timeout=30.0)
    assert resolve(cfg, EXPERIMENT, {}, {}) == \
        Limits(real_time=50.0, memory_bytes=600 * MIB, start_timeout=30.0)
    assert resolve(cfg, {}, {}, {}) == \
        Limits(real_time=100.0, memory_bytes=800 * MIB, start_timeout=120.0)


def test_an_adopted_run_keeps_the_limits_its_launch_saved(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    launched = resolve(cfg, EXPERIMENT, {}, {"memory_mb": 300})
    record = {"timeout": {}, "limits": {"memory_mb": 300},
              "effective_limits": launched.to_dict()}
    assert adopted(cfg, record) == launched


def test_a_run_adopted_without_saved_limits_gets_its_posts_and_the_backends(
        tmp_path: Path) -> None:
    """A crash between the launch and its save (or a record older than the field): the
    experiment.json in the run dir is the script's to rewrite, so it is not read."""
    record = {"timeout": {"real_time": 5}, "limits": {}, "effective_limits": None}
    assert adopted(config(tmp_path), record) == \
        Limits(real_time=5.0, memory_bytes=800 * MIB, start_timeout=120.0)
