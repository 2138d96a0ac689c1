"""The backend's domain exceptions.

Domain code (manager, supervisor, experiment store, request schemas) raises these;
:mod:`backend.errors` alone turns them into HTTP statuses, in one table. ``code`` is
the machine-readable slug a client sees; a raise site may name a finer one.
"""
from __future__ import annotations

from typing import Any


class BackendError(Exception):
    """Base class of the backend's domain errors."""

    code = "backend_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        #: Extra fields of the JSON error (never secrets, never local paths).
        self.details = details


class InvalidRequest(BackendError):
    """The request is malformed: a bad field, argument or body."""

    code = "bad_request"


class InvalidName(InvalidRequest):
    code = "invalid_name"


class InvalidArchive(InvalidRequest):
    code = "invalid_archive"


class UnsupportedMediaType(InvalidRequest):
    code = "unsupported_media_type"


class RequestTooLarge(InvalidRequest):
    code = "too_large"


class NotFound(BackendError):
    code = "not_found"


class SimulationNotFound(NotFound):
    code = "simulation_not_found"


class ExperimentNotFound(NotFound):
    code = "experiment_not_found"


class Conflict(BackendError):
    """The request is valid but the current state forbids it."""

    code = "conflict"


class DuplicateSimulation(Conflict):
    code = "duplicate_id"


class NotTerminal(Conflict):
    code = "not_terminal"


class SimulationBusy(Conflict):
    """The simulation is being wound up (upload, removal); try again shortly."""

    code = "busy"


class ScratchSpaceError(BackendError):
    """The backend's own disk failed it (full, unwritable): not the client's fault."""

    code = "scratch_unavailable"


class CapacityReached(BackendError):
    """No more simulations may hold a process now."""

    code = "too_many_running"


class TooManyStreams(CapacityReached):
    """No more event streams may be open now."""

    code = "too_many_streams"
