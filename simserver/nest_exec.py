"""``/exec`` of a NEST session: run Python source, answer with variables and stdout.

There is no RestrictedPython here, on purpose. The source runs in the NEST session's
own process: the simulation owner's process, in its own session and process group,
under the run's limits, able to touch only what the run may touch. Whoever may call
``/exec`` may already run any script there as the experiment's main script, so process
isolation is the sandbox; a sandbox inside the process would add nothing but a false
sense of safety (NEST Server's was escaped through module attributes) and break
ordinary scripts (no imports, no ``numpy``).

As in NEST Server: each call runs in fresh globals holding ``nest``; ``{"return": name}``
returns that variable as ``data`` (``null`` if unset), ``{"return": [names]}`` a dict
of them; ``stdout`` holds what the source printed (lines joined by ``\\n``) and is
left out when it printed nothing. Unlike NEST Server, ``import`` statements work, and
``nest`` (imported or not) is the session's, whose ``Simulate`` pauses and stops.
"""
from __future__ import annotations

import builtins
import io
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from simserver.errors import SimulationStopped
from simserver.nest_json import to_json_data
from simserver.nest_session import NestSession, nest_error_message

#: The file name of exec'd source in tracebacks: error lines are counted in it.
EXEC_FILENAME = "<exec>"


class ExecError(Exception):
    """The source did not compile or raised; ``code`` and ``details`` of the JSON error."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = {key: value for key, value in details.items() if value is not None}


def run_source(session: NestSession, request: dict[str, Any]) -> dict[str, Any]:
    """Run ``request["source"]`` on the kernel thread; return NEST Server's answer.

    Raises:
        ExecError: ``exec_disabled``, ``bad_arguments``, ``syntax_error``, ``nest_error``
            or ``exec_error``, with the ``line`` of the source and what it printed.
        SimulationStopped: the session was stopped while the source simulated.
    """
    if not session.allow_exec:
        raise ExecError("exec_disabled", "this NEST session does not run scripts")
    source = request.get("source", "")
    if not isinstance(source, str):
        raise ExecError("bad_arguments", f"'source' must be a string, not {source!r}")
    try:
        code = compile(source, EXEC_FILENAME, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ExecError("syntax_error", f"SyntaxError: {exc.msg}", exception="SyntaxError",
                        line=exc.lineno) from exc
    namespace = exec_globals(session)
    with captured_stdout() as printed:
        try:
            exec(code, namespace)  # noqa: S102 - running the caller's source is the route
        except SimulationStopped:
            raise
        except (Exception, SystemExit) as exc:
            raise _exec_error(session, exc, printed.getvalue()) from exc
    response: dict[str, Any] = {}
    stdout = "\n".join(printed.getvalue().splitlines())
    if stdout:
        response["stdout"] = stdout
    if "return" in request:
        names = request["return"]
        data = {name: namespace.get(name) for name in names} \
            if isinstance(names, (list, tuple)) else namespace.get(names)
        response["data"] = to_json_data(data)
    return response


def exec_globals(session: NestSession) -> dict[str, Any]:
    """Fresh globals: ``nest`` is the session's, also when the source imports it."""
    stepped = session.stepped

    def import_(name: str, globals: Any = None, locals: Any = None,
                fromlist: Any = (), level: int = 0) -> Any:
        if name == "nest" and level == 0:
            return stepped
        return builtins.__import__(name, globals, locals, fromlist, level)

    return {"__name__": "nest_exec", "__builtins__": {**vars(builtins), "__import__": import_},
            "nest": stepped}


def _exec_error(session: NestSession, exc: BaseException, printed: str) -> ExecError:
    """An ExecError naming the line of the source that raised."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if frame.filename == EXEC_FILENAME]
    line = frames[-1].lineno if frames else None
    stdout = "\n".join(printed.splitlines()) or None
    if isinstance(exc, session.nest.NESTError):
        return ExecError("nest_error", nest_error_message(exc), nest_error=type(exc).__name__,
                         line=line, stdout=stdout)
    return ExecError("exec_error", f"{type(exc).__name__}: {exc}",
                     exception=type(exc).__name__, line=line, stdout=stdout)


class _Tee:
    """``sys.stdout`` while source runs: everything still reaches the process's stdout
    (the run's ``logs/stdout.log``), and what the kernel thread prints is also kept."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.kept = io.StringIO()
        self.thread = threading.get_ident()

    def write(self, text: str) -> int:
        if threading.get_ident() == self.thread:
            self.kept.write(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, encoding, isatty ...
        return getattr(self.stream, name)


@contextmanager
def captured_stdout() -> Iterator[io.StringIO]:
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    try:
        yield tee.kept
    finally:
        if sys.stdout is tee:
            sys.stdout = tee.stream
        tee.stream.flush()
