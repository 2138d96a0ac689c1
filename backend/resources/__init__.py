"""Flask-RESTful resources, one module per resource group.

Each resource parses its request, calls one method of the manager or the
experiment store, and serialises the answer; errors are raised, never built here.
"""
from __future__ import annotations

import json
import re
from typing import Any

from flask import current_app, request

from backend.exceptions import InvalidRequest, RequestTooLarge
from lifecycle import SimState, UnknownState, parse_state


#: How deeply a JSON body may nest lists and objects.
MAX_JSON_DEPTH = 32
_DIGITS = re.compile(r"[0-9]{1,18}")
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")


def json_body() -> Any:
    """The request's JSON body: at most ``--max-json-bytes``, nested at most
    :data:`MAX_JSON_DEPTH` deep, strict JSON (no NaN or Infinity).

    Raises:
        InvalidRequest: ``bad_json`` when the body is missing or malformed.
        RequestTooLarge: over the size.
    """
    limit = current_app.extensions["simbackend"].config.max_json_bytes
    if (request.content_length or 0) > limit:
        raise RequestTooLarge(f"a JSON body may have at most {limit} bytes")
    data = request.stream.read(limit + 1)  # a chunked body has no length to check first
    if len(data) > limit:
        raise RequestTooLarge(f"a JSON body may have at most {limit} bytes")
    if not data.strip():
        raise InvalidRequest("a JSON body is required", code="bad_json")
    try:
        body = json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        body = _TOO_DEEP
    except ValueError as exc:  # also numbers of more digits than int() takes
        raise InvalidRequest(f"the body is not valid JSON: {exc}", code="bad_json") from None
    if body is _TOO_DEEP or _depth(body) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"the body is nested deeper than {MAX_JSON_DEPTH} levels",
                             code="bad_json")
    return body


_TOO_DEEP = object()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                stack.extend((child, depth + 1) for child in item)
    return deepest


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


def page_args() -> tuple[int | None, str | None]:
    """``?limit=&cursor=`` of a listing (checked by :func:`backend.paging.page`)."""
    return int_arg("limit"), request.args.get("cursor") or None


def bool_arg(name: str, default: bool) -> bool:
    """A query argument ``true``/``false`` (also ``1``/``0``, ``yes``/``no``).

    Raises:
        InvalidRequest: anything else.
    """
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise InvalidRequest(f"query argument {name!r} must be true or false",
                         code="invalid_argument")
