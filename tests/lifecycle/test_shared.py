"""The shared vocabulary beyond the machines: commands, running time, experiment values."""
from __future__ import annotations

import pytest

from lifecycle import SimState, experiment
from lifecycle.clock import RunningTime
from lifecycle.errors import InvalidExperiment
from lifecycle.messages import COMMAND_TARGETS, next_command

S = SimState


@pytest.mark.parametrize("server,wanted,command", [
    (S.INITIALIZED, S.STARTED, "start"), (S.PAUSED, S.STARTED, "resume"),
    (S.STARTED, S.PAUSED, "pause"), (S.INITIALIZED, S.PAUSED, "start"),
    (S.STARTED, S.STARTED, None), (S.PAUSED, S.PAUSED, None),
    (S.INITIALIZED, S.INITIALIZED, None), (None, S.STARTED, None), (S.CREATED, S.STARTED, None),
    (S.STARTED, S.STOPPED, None), (S.COMPLETED, S.STARTED, None),
])
def test_next_command(server, wanted, command) -> None:
    assert next_command(server, wanted) == command
    if command is not None:
        assert command in COMMAND_TARGETS


def test_running_time_counts_only_while_running() -> None:
    now = [0.0]
    clock = RunningTime(lambda: now[0])
    now[0] = 5.0
    clock.run()
    now[0] = 7.0
    assert clock.elapsed() == 2.0
    clock.run()                       # again while running: no double count
    clock.hold()
    now[0] = 100.0
    assert clock.elapsed() == 2.0 and not clock.running
    clock.run()
    now[0] = 101.5
    assert clock.elapsed() == 3.5
    clock.reset(10.0, running=False)
    now[0] = 200.0
    assert clock.elapsed() == 10.0


@pytest.mark.parametrize("value,integer,ok", [
    (1, False, True), (0.5, False, True), (1, True, True), (0, False, False),
    (-1, False, False), (float("nan"), False, False), (float("inf"), False, False),
    (True, False, False), ("1", False, False), (1.5, True, False), (None, False, False),
])
def test_positive_number(value, integer: bool, ok: bool) -> None:
    if ok:
        assert experiment.positive_number(value, "x", integer=integer) == value
    else:
        with pytest.raises(InvalidExperiment, match="'x' must be a positive"):
            experiment.positive_number(value, "x", integer=integer)


def test_experiment_sections_are_checked() -> None:
    assert experiment.timeout({"timeout": {"sim_time": 10}}) == {"sim_time": 10.0}
    assert experiment.timeout({}) == {} and experiment.limits({"limits": None}) == {}
    for bad in ({"timeout": 5}, {"timeout": {"wall": 1}}, {"timeout": {"sim_time": -1}},
                {"limits": {"memory_mb": "a lot"}}):
        with pytest.raises(InvalidExperiment):
            experiment.timeout(bad) if "timeout" in bad else experiment.limits(bad)
    assert experiment.timestep({}) == 1.0
    with pytest.raises(InvalidExperiment, match="'timestep'"):
        experiment.timestep({"timestep": 0})


def test_experiment_files_are_parsed_in_one_place(tmp_path) -> None:
    with pytest.raises(InvalidExperiment, match="no experiment.json"):
        experiment.read_experiment(tmp_path)
    (tmp_path / "experiment.json").write_text("[1]")
    with pytest.raises(InvalidExperiment, match="a JSON object"):
        experiment.read_experiment(tmp_path)
    (tmp_path / "experiment.json").write_text("{nope")
    with pytest.raises(InvalidExperiment, match="not valid JSON"):
        experiment.read_experiment(tmp_path)
    with pytest.raises(InvalidExperiment, match="main_script"):
        experiment.main_script({"main_script": ""})
