"""Exceptions of the lifecycle package."""
from __future__ import annotations


class LifecycleError(Exception):
    """Base class of lifecycle errors."""


class InvalidTransition(LifecycleError):
    """The requested state cannot be reached from the current one."""

    def __init__(self, current: object, target: object, reason: str = "") -> None:
        self.current = current
        self.target = target
        message = f"cannot go from {current} to {target}"
        super().__init__(f"{message}: {reason}" if reason else message)


class UnknownState(LifecycleError, ValueError):
    """The name given is not a state, or not one an operator may request."""


class InvalidExperiment(LifecycleError, ValueError):
    """An ``experiment.json`` (or a value of it) that cannot be run."""
