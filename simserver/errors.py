"""Exceptions of the simulation server, including the two a script sees."""
from __future__ import annotations


class SimulationStopped(BaseException):
    """Raised inside ``run_loop`` when an operator stops the simulation.

    A ``BaseException`` so that a script's ``except Exception`` cannot swallow it.
    """


class SimulationTimeout(Exception):
    """Raised by ``run_loop`` before it would advance past a timeout."""


class SimServerError(Exception):
    """Base class of the simulation server's own failures.

    ``error_type`` is the typed failure reason recorded in the simulation's
    ``error`` (``experiment_error``, ``kernel_error`` ...).
    """

    error_type = "simserver_error"

    def details(self) -> dict:
        return {}


class ExperimentError(SimServerError):
    """The experiment is malformed: bad ``experiment.json``, missing files."""

    error_type = "experiment_error"


class KernelError(SimServerError):
    """An engine could not be built, or failed while stepping."""

    error_type = "kernel_error"

    def __init__(self, message: str, engine: str | None = None) -> None:
        super().__init__(message)
        self.engine = engine

    def details(self) -> dict:
        return {"engine": self.engine} if self.engine else {}


class KernelBusy(SimServerError):
    """A NEST session cannot take this call now: a ``Simulate`` is in progress and the
    call would advance, reset or restructure the kernel between two of its chunks."""

    error_type = "kernel_busy"


class SessionClosed(SimServerError):
    """The NEST session has ended (stopped): it takes no more calls."""

    error_type = "session_closed"
