"""Loading and running the user's main script."""
from __future__ import annotations

import builtins
import sys
import traceback
from pathlib import Path
from types import CodeType
from typing import Any

import simserver
from lifecycle import SimState
from simserver import script
from simserver.errors import ExperimentError, SimulationStopped, SimulationTimeout

_PACKAGE_DIR = str(Path(simserver.__file__).parent)
_TRACEBACK_LINES = 40


class ScriptError(Exception):
    """The script failed; ``error`` is the record's typed failure reason."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = error


def compile_script(experiment_dir: Path, main_script: str) -> CodeType:
    """Read and compile the main script, so syntax errors fail the initialize.

    Raises:
        ExperimentError: the script is missing.
        ScriptError: it does not compile (``type = "syntax_error"``, with the line).
    """
    path = experiment_dir / main_script
    if not path.is_file():
        raise ExperimentError(f"main script {main_script!r} does not exist in the experiment")
    source = path.read_bytes()
    try:
        return compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        text = (exc.text or "").rstrip("\n")
        raise ScriptError({
            "type": "syntax_error",
            "message": f"{main_script}, line {exc.lineno}: {exc.msg}",
            "file": main_script, "line": exc.lineno, "offset": exc.offset, "text": text,
        }) from exc


def script_globals(path: Path) -> dict[str, Any]:
    """The globals a main script runs with: the names of ``simserver.script``."""
    return {
        "__name__": "__main__", "__file__": str(path), "__builtins__": builtins,
        "sim": script.sim, "file_logger": script.file_logger,
        "SimulationTimeout": SimulationTimeout, "SimulationStopped": SimulationStopped,
        "transceiver": script.transceiver,
    }


def run_script(code: CodeType, path: Path) -> SimState:
    """Run the compiled script and say how it ended: completed or stopped.

    ``SimulationTimeout`` escaping the script is a normal end.

    Raises:
        ScriptError: the script raised anything else (printed to stderr first).
    """
    sys.argv = [str(path)]
    try:
        exec(code, script_globals(path))
    except SimulationTimeout:
        pass  # the run loop logged which timeout it was
    except SimulationStopped:
        return SimState.STOPPED
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise _script_error(exc) from exc
    except BaseException as exc:  # noqa: BLE001 - every escape is the script's failure
        raise _script_error(exc) from exc
    return SimState.COMPLETED


def _script_error(exc: BaseException) -> ScriptError:
    """Describe a script's exception, with the frames of the simulation server left out."""
    tb = traceback.TracebackException.from_exception(exc)
    tb.stack = traceback.StackSummary.from_list(
        [f for f in tb.stack if not f.filename.startswith(_PACKAGE_DIR)])
    text = "".join(tb.format())
    sys.stderr.write(text)
    sys.stderr.flush()
    lines = text.rstrip("\n").splitlines()
    where = next((f for f in reversed(tb.stack)), None)
    error = {
        "type": "script_error",
        "exception": type(exc).__name__,
        "message": f"{type(exc).__name__}: {exc}",
        "traceback": "\n".join(lines[-_TRACEBACK_LINES:]),
    }
    if where is not None:
        error.update(file=where.filename, line=where.lineno)
    return ScriptError(error)
