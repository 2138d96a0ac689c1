"""Compiling and running the main script, and how each way of ending is reported."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import simserver
from simserver import script
from simserver.engines import Engine
from simserver.errors import ExperimentError
from simserver.kernel import Kernel
from simserver.runloop import RunLoop, Simulation
from simserver.runner import ScriptError, compile_script, run_script

SIMSERVER_DIR = str(Path(simserver.__file__).parent)

Run = Callable[[str], str]


def failing_transceiver(engines: dict[str, Engine], t: float) -> None:
    if t >= 2.0:
        raise ValueError(f"sensor broke at t={t:g}")


@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> RunLoop:
    """A released run loop (timestep 1 ms, sim-time timeout 5 ms) as the script's ``sim``."""
    run_loop = RunLoop(Kernel({}, [failing_transceiver], 1.0), sim_timeout=5.0)
    run_loop.release()
    monkeypatch.setattr(script, "sim", Simulation(run_loop, {"n": 1}, tmp_path / "results"))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    return run_loop


@pytest.fixture
def run(experiment: Path, loop: RunLoop) -> Run:
    """Write ``source`` as main.py, compile it and run it; return how it ended."""
    def run_source(source: str) -> str:
        (experiment / "main.py").write_text(source)
        return run_script(compile_script(experiment, "main.py"), experiment / "main.py")
    return run_source


def test_syntax_error_names_the_line(experiment: Path) -> None:
    (experiment / "main.py").write_text("x = 1\n\nfor i in range(3)\n    pass\n")
    with pytest.raises(ScriptError) as refused:
        compile_script(experiment, "main.py")
    error = refused.value.error
    assert error["type"] == "syntax_error"
    assert (error["file"], error["line"]) == ("main.py", 3)
    assert error["text"] == "for i in range(3)"
    assert error["message"].startswith("main.py, line 3: ")


def test_missing_script_is_an_experiment_error(experiment: Path) -> None:
    with pytest.raises(ExperimentError, match="main script 'nope.py' does not exist"):
        compile_script(experiment, "nope.py")


def test_returning_is_completed(run: Run, loop: RunLoop) -> None:
    assert run("sim.run_loop(1)\n") == "completed"
    assert loop.kernel.steps == 1


def test_script_globals(run: Run, loop: RunLoop, experiment: Path) -> None:
    source = '''
import sys
from simserver.script import sim as imported, file_logger as logger
assert __name__ == "__main__" and __file__ == sys.argv[0]
assert imported is sim and logger is file_logger and sim.params == {"n": 1}
assert callable(transceiver) and issubclass(SimulationStopped, BaseException)
'''
    assert run(source) == "completed"
    assert sys.argv == [str(experiment / "main.py")]


def test_an_uncaught_timeout_is_completed(run: Run, loop: RunLoop) -> None:
    loop.kernel.transceivers = []
    assert run("while True:\n    sim.run_loop(1)\n") == "completed"
    assert loop.kernel.time == 5.0


def test_a_stop_is_stopped_even_through_except_exception(run: Run, loop: RunLoop) -> None:
    loop.request_stop()
    source = "try:\n    sim.run_loop(1)\nexcept Exception:\n    pass\n"
    assert run(source) == "stopped"
    assert loop.kernel.steps == 0


def test_an_exception_is_a_script_error(run: Run, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ScriptError) as failed:
        run("x = 7\n\nraise ValueError(f'bad value {x}')\n")
    error = failed.value.error
    assert error["type"] == "script_error"
    assert error["exception"] == "ValueError"
    assert error["message"] == "ValueError: bad value 7"
    assert Path(error["file"]).name == "main.py" and error["line"] == 3
    assert error["traceback"].endswith("ValueError: bad value 7")
    assert "ValueError: bad value 7" in capsys.readouterr().err


def test_the_traceback_leaves_out_the_simservers_frames(run: Run) -> None:
    with pytest.raises(ScriptError) as failed:
        run("for _ in range(4):\n    sim.run_loop(1)\n")
    error = failed.value.error
    traceback = error["traceback"]
    assert 'main.py", line 2' in traceback
    assert "failing_transceiver" in traceback          # the user's own frames stay
    assert SIMSERVER_DIR not in traceback
    assert error["message"] == "ValueError: sensor broke at t=2"


@pytest.mark.parametrize("call", ["sys.exit()", "sys.exit(0)", "raise SystemExit(None)"])
def test_exit_zero_is_completed(run: Run, call: str) -> None:
    assert run(f"import sys\n{call}\nraise AssertionError('not reached')\n") == "completed"


@pytest.mark.parametrize("call, message", [("sys.exit(3)", "SystemExit: 3"),
                                           ("sys.exit('giving up')", "SystemExit: giving up")])
def test_exit_nonzero_is_a_script_error(run: Run, call: str, message: str) -> None:
    with pytest.raises(ScriptError) as failed:
        run(f"import sys\n{call}\n")
    error = failed.value.error
    assert (error["type"], error["exception"], error["message"]) == (
        "script_error", "SystemExit", message)
