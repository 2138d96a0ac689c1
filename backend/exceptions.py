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


class NotNestSession(NotFound):
    """The simulation holds no NEST session: it has no NEST Server API."""

    code = "not_a_nest_session"


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


class NotQueued(Conflict):
    """The simulation is not in the queue (it runs, ended, or was never queued)."""

    code = "not_queued"


class ExceedsHost(Conflict):
    """The run reserves more than the whole host lends: it could never be admitted."""

    code = "exceeds_host"


class Forbidden(BackendError):
    """The caller may not do this (raise a priority, move queue entries)."""

    code = "forbidden"


class ScratchSpaceError(BackendError):
    """The backend's own disk failed it (full, unwritable): not the client's fault."""

    code = "scratch_unavailable"


class SessionNotLive(Conflict):
    """The NEST session has not been started, or has ended: no kernel to call."""

    code = "session_not_running"


class SessionUnreachable(BackendError):
    """The session's simulation server did not answer a forwarded call."""

    code = "session_unreachable"


class SessionTimeout(SessionUnreachable):
    code = "session_timeout"


class NestCallsBusy(BackendError):
    """As many long NEST calls (Simulate, Run, /exec) are in flight as the backend
    allows at once: a worker thread is kept free for everything else."""

    code = "too_many_nest_calls"


class TooManyStreams(BackendError):
    """No more event streams may be open now."""

    code = "too_many_streams"


class Unauthenticated(BackendError):
    """The request carries no valid token (missing, malformed, unknown, expired, revoked)."""

    code = "unauthenticated"


class TooManyFailures(BackendError):
    """This client address failed to authenticate too often; it must wait."""

    code = "too_many_failures"
