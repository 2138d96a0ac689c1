"""Flask-RESTful resources, one module per resource group.

Each resource parses its request, calls one method of the manager or the
experiment store, and serialises the answer; errors are raised, never built here.
"""
from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from backend.exceptions import InvalidRequest
from lifecycle import SimState, UnknownState, parse_state


_DIGITS = re.compile(r"[0-9]{1,18}")
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")


def json_body() -> Any:
    """The request's JSON body.

    Raises:
        InvalidRequest: ``bad_json`` when the body is missing or malformed.
    """
    data = request.get_data(cache=True)
    if not data.strip():
        raise InvalidRequest("a JSON body is required", code="bad_json")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}", code="bad_json") from None


def int_arg(name: str, default: int | None = None) -> int | None:
    """A non-negative integer query argument.

    Raises:
        InvalidRequest: the argument is not a non-negative integer.
    """
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: str.isdigit() accepts '²' and other digits int() refuses.
    if not _DIGITS.fullmatch(raw):
        raise InvalidRequest(f"query argument {name!r} must be a non-negative integer "
                             "below 10**18", code="invalid_argument")
    return int(raw)


def seconds_arg(name: str, maximum: float) -> float | None:
    """A query argument giving seconds, above 0 and at most ``maximum``.

    Raises:
        InvalidRequest: anything else.
    """
    raw = request.args.get(name)
    if raw is None:
        return None
    value = float(raw) if _SECONDS.fullmatch(raw) else 0.0
    if not 0 < value <= maximum:
        raise InvalidRequest(f"query argument {name!r} must be a number of seconds above 0 "
                             f"and at most {maximum:g}", code="invalid_argument")
    return value


def state_arg(name: str) -> SimState | None:
    """A query argument naming a state.

    Raises:
        UnknownState: it names no state.
    """
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return parse_state(raw)
    except ValueError as exc:
        raise UnknownState(str(exc)) from None
