"""Every error the API can answer, and the one place exceptions become HTTP.

Each package raises its own exceptions; :func:`register` maps them to
``{"error": {"code", "message"}}`` with the right status. Tracebacks are logged,
never sent.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from lifecycle import InvalidTransition, UnknownState
from storage import InvalidKey, ObjectNotFound, StorageError, StorageUnavailable

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error with its HTTP status and machine-readable code."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.extra = extra


class BadRequest(APIError):
    status, code = 400, "bad_request"


class NotFound(APIError):
    status, code = 404, "not_found"


class Conflict(APIError):
    status, code = 409, "conflict"


class TooManyRequests(APIError):
    status, code = 429, "too_many_requests"


class ServiceUnavailable(APIError):
    status, code = 503, "unavailable"


class SimulationNotFound(NotFound):
    code = "simulation_not_found"


class ExperimentNotFound(NotFound):
    code = "experiment_not_found"


class InvalidArchive(BadRequest):
    code = "invalid_archive"


class ScratchSpaceError(ServiceUnavailable):
    """The backend's own disk failed it (full, unwritable): not the client's fault."""

    code = "scratch_unavailable"


# Exceptions of the other packages, by class (most specific first).
_MAPPED: list[tuple[type[Exception], int, str]] = [
    (UnknownState, 400, "invalid_state"),
    (InvalidTransition, 409, "invalid_transition"),
    (InvalidKey, 400, "invalid_key"),
    (ObjectNotFound, 404, "not_found"),
    (StorageUnavailable, 503, "storage_unavailable"),
    (StorageError, 502, "storage_error"),
]


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
    if isinstance(exc, APIError):
        return error_response(exc.status, exc.code, exc.message, **exc.extra)
    if isinstance(exc, HTTPException):
        response = error_response(exc.code or 500, slug(exc.name), exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response
    for cls, status, code in _MAPPED:
        if isinstance(exc, cls):
            if status >= 500:
                logger.warning("%s: %s", code, exc)
            return error_response(status, code, str(exc))
    logger.exception("unhandled error")
    return error_response(500, "internal_error", "the server failed to handle the request; "
                                                 "details are in its log")


def register(app: Flask) -> None:
    app.register_error_handler(Exception, handle)
