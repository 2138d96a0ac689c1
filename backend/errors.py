"""The one place exceptions become HTTP.

Each package raises its own exceptions; :data:`STATUSES` maps each class to a
status (the first matching class wins, so the specific come first) and
:func:`handle` answers ``{"error": {"code", "message", ...}}``. Tracebacks are
logged, never sent.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from backend.exceptions import (
    BackendError, Conflict, Forbidden, InvalidRequest, NestCallsBusy, NotFound,
    RequestTooLarge, ScratchSpaceError, SessionTimeout, SessionUnreachable, TooManyFailures,
    TooManyStreams, Unauthenticated, UnsupportedMediaType,
)
from lifecycle import InvalidTransition, UnknownState
from lifecycle.errors import InvalidExperiment
from storage import InvalidKey, ObjectNotFound, StorageError, StorageUnavailable

logger = logging.getLogger(__name__)

#: Exception class -> (status, code). ``None`` keeps the exception's own ``code``.
STATUSES: list[tuple[type[Exception], int, str | None]] = [
    (UnsupportedMediaType, 415, None),
    (RequestTooLarge, 413, None),
    (InvalidRequest, 400, None),
    (Unauthenticated, 401, None),
    (TooManyFailures, 429, None),
    (NotFound, 404, None),
    (Conflict, 409, None),
    (Forbidden, 403, None),
    (TooManyStreams, 429, None),
    (ScratchSpaceError, 503, None),
    (NestCallsBusy, 503, None),
    (SessionTimeout, 504, None),
    (SessionUnreachable, 502, None),
    (UnknownState, 400, "invalid_state"),
    (InvalidTransition, 409, "invalid_transition"),
    (InvalidExperiment, 400, "invalid_experiment"),
    (InvalidKey, 400, "invalid_key"),
    (ObjectNotFound, 404, "not_found"),
    (StorageUnavailable, 503, "storage_unavailable"),
    (StorageError, 502, "storage_error"),
]

#: Headers an error of a status carries: how to authenticate, when to try again.
_HEADERS = {401: {"WWW-Authenticate": 'Bearer realm="simbackend"'},
            429: {"Retry-After": "2"}}


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"error": {"code": code, "message": message, **extra}})
    response.status_code = status
    return response


def error_body(code: str, message: str) -> bytes:
    """The JSON error document as bytes, for answers made outside Flask (the WSGI server)."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def slug(name: str) -> str:
    """``'Request Entity Too Large'`` -> ``'request_entity_too_large'``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def handle(exc: Exception) -> Response:
    """Turn any exception into the API's JSON error."""
    if isinstance(exc, HTTPException):
        response = error_response(exc.code or 500, slug(exc.name), exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response
    for cls, status, code in STATUSES:
        if isinstance(exc, cls):
            if status >= 500:
                logger.warning("%s: %s", code or getattr(exc, "code", "error"), exc)
            if isinstance(exc, BackendError):
                response = error_response(status, code or exc.code, exc.message, **exc.details)
                response.headers.update(_HEADERS.get(status, {}))
                return response
            return error_response(status, code or "error", str(exc))
    logger.exception("unhandled error")
    return error_response(500, "internal_error", "the server failed to handle the request; "
                                                 "details are in its log")


def register(app: Flask) -> None:
    app.register_error_handler(Exception, handle)
