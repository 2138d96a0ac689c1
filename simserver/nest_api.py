"""The NEST Server 3.10 API answered by a NEST session, without HTTP.

:func:`handle` takes one request (method, path below the NEST root, query, parsed JSON
body or form) and returns ``(status, payload)``; :func:`dumps` encodes the payload as
NEST Server does (Flask's ``jsonify``), so ``nest-client`` works unchanged. Routes:

- ``GET /``: ``{"mpi": false, "nest": "<version>"}``.
- ``GET /api``: the public names of PyNEST, sorted.
- ``GET|POST /api/<call>``: call ``nest.<call>(*args, **kwargs)`` and return the result;
  a name that is no function returns its value (``/api/biological_time``);
  ``?inspect=getdoc|getsource`` returns ``{"data": <doc or source>}``.
- ``GET|POST /exec``: run ``source``; see :mod:`simserver.nest_exec`.

Arguments are taken as NEST Server takes them: a JSON object is the keyword arguments,
its ``"args"`` the positional ones; a JSON list is the positional arguments, a string
the only one; without a JSON body the form, else the query string (values as strings).
Lists of node ids given for a parameter that takes nodes (``nodes``, ``pre``, ``post``,
``source``, ``target``, ``nodes_or_conns``) become ``NodeCollection``s. Results are
made JSON as NEST's ``serialize_data`` does: ``NodeCollection`` -> list of ids,
``SynapseCollection`` -> its ``get()`` dict, numpy arrays and scalars -> lists and numbers.

Where NEST Server fails, this answers differently:

- Every error is ``{"error": {"code", "message", ...}}``: a NEST error is 400
  ``nest_error`` with NEST's own message and ``"nest_error": "<its name>"`` (NEST Server
  answers every NEST error with an HTML 500); bad arguments are 400 ``bad_arguments``.
- ``GetStatus``/``SetStatus`` get ``NodeCollection``s (NEST Server converts only
  parameters named ``nodes`` etc., and these take ``nodes_or_conns``), and the
  documented ``{"nodes": [...]}`` keyword is accepted for ``nodes_or_conns``.
- ``Simulate`` runs in chunks on the session (pause and stop land between them).
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from simserver.errors import KernelBusy, SessionClosed, SimulationStopped
from simserver.nest_exec import ExecError, run_source
from simserver.nest_json import Unserializable, dumps, to_json_data
from simserver.nest_session import BETWEEN_CHUNKS, NestSession, nest_error_message

logger = logging.getLogger(__name__)

__all__ = ["NestApiError", "api_names", "call_api", "dumps", "handle", "request_arguments"]

#: Parameter names whose list of node ids becomes a ``NodeCollection``.
NODE_PARAMETERS = frozenset({"nodes", "nodes_or_conns", "pre", "post", "source", "target"})
INSPECTIONS = {"getdoc": inspect.getdoc, "getsource": inspect.getsource}
Reply = tuple[int, Any]


class NestApiError(Exception):
    """A request the API refuses: ``status`` and ``code`` of the JSON error it becomes."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.details = status, code, details

    def reply(self) -> Reply:
        return self.status, error_payload(self.code, str(self), **self.details)


def error_payload(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


# -- the entry point ---------------------------------------------------------------------

def handle(session: NestSession, method: str, path: str,
           query: Mapping[str, list[str]] | None = None, body: Any = None,
           form: Mapping[str, list[str]] | None = None) -> Reply:
    """Answer one NEST Server request; never raises for a bad request.

    ``path`` is below the NEST root (``/``, ``/api``, ``/api/Create``, ``/exec``);
    ``query`` and ``form`` map names to lists of values (``urllib.parse.parse_qs``);
    ``body`` is the parsed JSON body, None without one.
    """
    try:
        return _route(session, method.upper(), path, query or {}, body, form or {})
    except NestApiError as exc:
        return exc.reply()
    except Exception as exc:  # a bug of ours: log it, never send a traceback
        logger.exception("nest api: %s %s failed", method, path)
        return 500, error_payload("internal_error", f"{type(exc).__name__}: {exc}")


def _route(session: NestSession, method: str, path: str, query: Mapping[str, list[str]],
           body: Any, form: Mapping[str, list[str]]) -> Reply:
    parts = [part for part in path.split("/") if part]
    if len(parts) > 2 or (parts and parts[0] not in ("api", "exec")) \
            or (parts[:1] == ["exec"] and len(parts) > 1):
        raise NestApiError(404, "not_found", f"no NEST Server route {path}")
    allowed = ("GET",) if len(parts) == 0 or parts == ["api"] else ("GET", "POST")
    if method not in allowed:
        raise NestApiError(405, "method_not_allowed",
                           f"{path} takes {' or '.join(allowed)}, not {method}")
    if not parts:
        return 200, {"mpi": False, "nest": session.version}
    if parts == ["api"]:
        return 200, api_names(session.nest)
    args, kwargs = request_arguments(body, form, query)
    if parts == ["exec"]:
        return 200, _call(session, "exec", lambda: run_source(session, kwargs), False)
    return 200, call_api(session, parts[1], args, kwargs)


def request_arguments(body: Any, form: Mapping[str, list[str]],
                      query: Mapping[str, list[str]]) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` from the JSON body, else the form, else the query string."""
    if body is not None:
        if isinstance(body, str):
            return ([body] if body else []), {}
        if isinstance(body, list):
            return list(body), {}
        if isinstance(body, dict):
            kwargs = dict(body)
            args = kwargs.pop("args", [])
            # A lone value is one argument (NEST Server would split a string into letters).
            return (list(args) if isinstance(args, (list, tuple)) else [args]), kwargs
        return [], {}
    for fields in (form, query):
        if fields:
            if "args" in fields:
                return list(fields["args"]), {}
            return [], {key: values[0] for key, values in fields.items()}
    return [], {}


def api_names(nest: Any) -> list[str]:
    """What ``GET /api`` lists: PyNEST's public names, sorted."""
    return sorted(name for name in dir(nest) if not name.startswith("_"))


# -- /api/<call> --------------------------------------------------------------------------

def call_api(session: NestSession, name: str, args: list[Any],
             kwargs: dict[str, Any]) -> Any:
    """Call (or read, or inspect) ``nest.<name>`` on the kernel thread; return JSON data.

    Raises:
        NestApiError: unknown name, bad arguments, a NEST error, a busy or closed session.
    """
    nest = session.nest
    if name.startswith("_") or name not in dir(nest):
        raise NestApiError(400, "unknown_call", f"module 'nest' has no attribute '{name}'")
    # Reading a kernel attribute, inspecting a function and the calls of BETWEEN_CHUNKS
    # may run between two chunks of a Simulate; the rest waits for its end.
    static = inspect.getattr_static(nest, name, None)
    reads = name in BETWEEN_CHUNKS or "inspect" in kwargs or \
        (static is not None and not callable(static))
    return _call(session, name, lambda: _invoke(session, name, args, kwargs), reads)


def _invoke(session: NestSession, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    target = getattr(session.stepped, name)
    if not callable(target):
        return to_json_data(target)
    if "inspect" in kwargs:
        return {"data": inspect_function(getattr(session.nest, name), kwargs["inspect"])}
    args, kwargs = node_arguments(session.nest, getattr(session.nest, name), args, kwargs)
    return to_json_data(target(*args, **kwargs))


def inspect_function(function: Any, how: Any) -> str | None:
    """``inspect.getdoc`` or ``inspect.getsource`` of a PyNEST function.

    Raises:
        NestApiError: another kind of inspection, or no source to show.
    """
    inspection = INSPECTIONS.get(how) if isinstance(how, str) else None
    if inspection is None:
        raise NestApiError(400, "bad_arguments",
                           f"inspect must be {' or '.join(INSPECTIONS)}, not {how!r}")
    try:
        return inspection(function)
    except (OSError, TypeError) as exc:
        raise NestApiError(400, "bad_arguments", f"{type(exc).__name__}: {exc}",
                           exception=type(exc).__name__) from exc


def node_arguments(nest: Any, function: Any, args: list[Any],
                   kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Turn the node ids given for node parameters into ``NodeCollection``s."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a class or builtin without a signature
        return args, kwargs
    positional = [p.name for p in parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if "nodes" in kwargs and "nodes" not in parameters and "nodes_or_conns" in parameters:
        kwargs["nodes_or_conns"] = kwargs.pop("nodes")     # NEST Server's documented name
    args = [_nodes(nest, value) if index < len(positional)
            and positional[index] in NODE_PARAMETERS else value
            for index, value in enumerate(args)]
    kwargs = {key: _nodes(nest, value) if key in NODE_PARAMETERS else value
              for key, value in kwargs.items()}
    return args, kwargs


def _nodes(nest: Any, value: Any) -> Any:
    """A list of node ids (or one id) as a ``NodeCollection``; anything else unchanged."""
    if isinstance(value, int) and not isinstance(value, bool):
        return nest.NodeCollection([value])
    if isinstance(value, (list, tuple)) and all(
            isinstance(item, int) and not isinstance(item, bool) for item in value):
        return nest.NodeCollection(list(value))
    return value


# -- running on the kernel thread, errors ---------------------------------------------------

def _call(session: NestSession, name: str, work: Any, reads: bool) -> Any:
    """Run ``work`` on the kernel thread; turn what it raised into a ``NestApiError``."""
    try:
        return session.submit(work, name, between_chunks=reads)
    except NestApiError:
        raise
    except Unserializable as exc:
        raise NestApiError(400, "unserializable_result",
                           f"the result cannot be sent as JSON: {exc}") from exc
    except ExecError as exc:
        raise NestApiError(400, exc.code, str(exc), **exc.details) from exc
    except KernelBusy as exc:
        raise NestApiError(409, "kernel_busy", str(exc)) from exc
    except SessionClosed as exc:
        raise NestApiError(409, "session_closed", str(exc)) from exc
    except SimulationStopped as exc:
        raise NestApiError(409, "stopped", str(exc)) from exc
    except session.nest.NESTError as exc:
        raise NestApiError(400, "nest_error", nest_error_message(exc),
                           nest_error=type(exc).__name__) from exc
    except Exception as exc:
        raise NestApiError(400, "bad_arguments" if isinstance(exc, _ARGUMENT_ERRORS)
                           else "call_failed", f"{type(exc).__name__}: {exc}",
                           exception=type(exc).__name__) from exc


_ARGUMENT_ERRORS = (TypeError, ValueError, LookupError, AttributeError)
