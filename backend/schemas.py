"""Request bodies, checked at the edge: what the resources hand the manager.

Each parser takes decoded JSON and returns a typed value or raises
:class:`~backend.exceptions.InvalidRequest` naming the offending field.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from backend.exceptions import InvalidRequest
from lifecycle import SimState, UnknownState, experiment, parse_state
from lifecycle.errors import InvalidExperiment
from storage import InvalidKey, validate_key

#: Fields of a NEST session (``"kernel": "nest"``), kept in its record's ``nest``.
_SESSION_FIELDS = ("threads", "seed", "resolution", "idle_timeout", "exec")
#: The kernels a simulation may hold as an interactive session instead of a script.
SESSION_KERNELS = ("nest",)
#: NEST takes seeds in [1, 2**31 - 1].
MAX_SEED = 2**31 - 1
MAX_THREADS = 256
_INTEGERS = ("threads", "seed")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_POST_FIELDS = {"experiment", "id", "main_script", "timeout", "params", "state", "limits",
                "priority", "resources", "owner", "kernel", *_SESSION_FIELDS}
#: Most bytes of a simulation's ``params`` as JSON (they are stored in every record).
MAX_PARAMS_BYTES = 64 * 1024
#: Priorities a run may have (above 0 only for operators and admins).
PRIORITIES = range(-1000, 1001)
#: States a simulation may be asked to reach when it is created.
CREATE_STATES = (SimState.INITIALIZED, SimState.STARTED)


@dataclass(frozen=True)
class NewSimulation:
    """A checked ``POST /v1/simulations`` body."""

    #: None for a NEST session without an experiment of its own.
    experiment: str | None
    id: str | None = None
    main_script: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    timeout: dict[str, float] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    state: SimState | None = None
    #: Queue order (higher first); who owns it; what it reserves of the host.
    priority: int = 0
    owner: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    #: ``"nest"``: an interactive NEST session (the NEST Server API under ``.../nest/``).
    kernel: str | None = None
    #: The session's settings: ``threads``, ``seed``, ``resolution``, ``idle_timeout``,
    #: ``exec`` (those given).
    nest: dict[str, Any] | None = None


@dataclass(frozen=True)
class QueueChange:
    """A checked ``PUT /v1/queue/<id>`` body."""

    position: int | None = None
    priority: int | None = None


def new_simulation(body: Any) -> NewSimulation:
    """Check a ``POST /v1/simulations`` body.

    Raises:
        InvalidRequest: with a code and a message naming the offending field.
        UnknownState: ``state`` is not one a simulation may be created in.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = set(body) - _POST_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}",
                             code="unknown_field")
    kernel = _kernel(body)
    if kernel is None and (not isinstance(body.get("experiment"), str) or
                           not body["experiment"]):
        raise InvalidRequest("'experiment' (a name) is required, or \"kernel\": \"nest\" "
                             "for a NEST session", code="missing_field")
    sim_id = body.get("id")
    if "id" in body and (not isinstance(sim_id, str) or not ID_PATTERN.fullmatch(sim_id)):
        raise InvalidRequest("'id' must be 1-64 letters, digits, '.', '_' or '-', starting "
                             "with a letter or digit", code="invalid_id")
    main_script = body.get("main_script")
    if "main_script" in body:
        try:
            validate_key(main_script if isinstance(main_script, str) else "")
        except InvalidKey:
            raise InvalidRequest("'main_script' must be a relative path inside the experiment",
                                 code="invalid_main_script") from None
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise InvalidRequest("'params' must be a JSON object", code="invalid_params")
    if len(json.dumps(params)) > MAX_PARAMS_BYTES:
        raise InvalidRequest(f"'params' may take at most {MAX_PARAMS_BYTES} bytes of JSON; "
                             "put large inputs into the experiment's files",
                             code="invalid_params")
    owner = body.get("owner")
    if "owner" in body and (not isinstance(owner, str) or not ID_PATTERN.fullmatch(owner)):
        raise InvalidRequest("'owner' must be 1-64 letters, digits, '.', '_' or '-', starting "
                             "with a letter or digit", code="invalid_owner")
    return NewSimulation(
        experiment=body.get("experiment"), kernel=kernel, nest=_session(body, kernel),
        id=sim_id, main_script=main_script, params=params,
        timeout=_section(body, "timeout", experiment.timeout, "invalid_timeout"),
        limits=_section(body, "limits", experiment.limits, "invalid_limits"),
        state=_create_state(body.get("state")), owner=owner,
        priority=_priority(body.get("priority", 0)),
        resources=_section(body, "resources", experiment.resources, "invalid_resources"))


def _priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in PRIORITIES:
        raise InvalidRequest(f"'priority' must be a whole number from {PRIORITIES.start} to "
                             f"{PRIORITIES.stop - 1}", code="invalid_priority")
    return value


def queue_change(body: Any) -> QueueChange:
    """Check a ``PUT /v1/queue/<id>`` body: ``{"position"?, "priority"?}``, at least one.

    Raises:
        InvalidRequest: naming the offending field.
    """
    if not isinstance(body, dict) or not body or set(body) - {"position", "priority"}:
        raise InvalidRequest("the body must be an object with 'position' and/or 'priority'",
                             code="invalid_queue_change")
    position = body.get("position")
    if "position" in body and (isinstance(position, bool) or not isinstance(position, int)
                               or not 0 <= position < 10**9):
        raise InvalidRequest("'position' must be a whole number from 0 (the front)",
                             code="invalid_position")
    priority = _priority(body["priority"]) if "priority" in body else None
    return QueueChange(position=position, priority=priority)


def _kernel(body: dict[str, Any]) -> str | None:
    """``kernel`` of a session, checked against the fields that go with it."""
    kernel = body.get("kernel")
    if kernel is None:
        given = [k for k in _SESSION_FIELDS if k in body]
        if given:
            raise InvalidRequest(f"{', '.join(map(repr, given))} belong(s) to a NEST session: "
                                 "add \"kernel\": \"nest\"", code="invalid_field")
        return None
    if kernel not in SESSION_KERNELS:
        raise InvalidRequest(f"'kernel' may be {', '.join(map(repr, SESSION_KERNELS))}, "
                             f"not {kernel!r}", code="invalid_kernel")
    clash = [k for k in ("experiment", "main_script", "params", "timeout") if k in body]
    if clash:
        raise InvalidRequest(f"a NEST session takes no {', '.join(map(repr, clash))}: its "
                             "network comes from NEST API calls (an idle session ends after "
                             "'idle_timeout' s)", code="invalid_field")
    return kernel


def _session(body: dict[str, Any], kernel: str | None) -> dict[str, Any] | None:
    """The checked settings of a NEST session (only those given)."""
    if kernel is None:
        return None
    try:
        settings = {key: experiment.positive_number(body[key], key, integer=key in _INTEGERS)
                    for key in ("threads", "seed", "resolution", "idle_timeout")
                    if body.get(key) is not None}
    except InvalidExperiment as exc:
        raise InvalidRequest(str(exc), code="invalid_field") from None
    for key, most in (("seed", MAX_SEED), ("threads", MAX_THREADS)):
        if settings.get(key, 1) > most:
            raise InvalidRequest(f"'{key}' must be at most {most}", code="invalid_field")
    if "exec" in body:
        if not isinstance(body["exec"], bool):
            raise InvalidRequest("'exec' must be true or false", code="invalid_field")
        settings["exec"] = body["exec"]
    return settings


def _section(body: dict[str, Any], key: str, check: Any, code: str) -> dict[str, float]:
    if key in body and not isinstance(body[key], dict):
        raise InvalidRequest(f"'{key}' must be an object", code=code)
    try:
        return check({key: body.get(key)})
    except InvalidExperiment as exc:
        raise InvalidRequest(str(exc), code=code) from None


def _create_state(value: Any) -> SimState | None:
    if value is None:
        return None
    try:
        state = parse_state(value)
    except ValueError:
        state = None
    if state not in CREATE_STATES:
        raise UnknownState("'state' may be 'initialized' or 'started' at creation")
    return state


def requested_state(body: Any) -> SimState:
    """The target of ``PUT .../state``: ``{"state": "<name>"}``.

    Raises:
        UnknownState: not a string naming a state.
    """
    target = body.get("state") if isinstance(body, dict) else None
    if not isinstance(target, str):
        raise UnknownState("'state' must be a string naming a state")
    try:
        return parse_state(target)
    except ValueError as exc:
        raise UnknownState(str(exc)) from None
