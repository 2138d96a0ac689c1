"""The limits of one simulation, resolved from POST, experiment.json and config."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backend.config import Config
from lifecycle import experiment
from lifecycle.errors import InvalidExperiment

MIB = 2**20


@dataclass(frozen=True)
class Limits:
    """Effective limits; None means unlimited."""

    real_time: float | None
    memory_bytes: int | None
    start_timeout: float

    def to_dict(self) -> dict[str, Any]:
        return {"real_time": self.real_time,
                "memory_mb": None if self.memory_bytes is None else self.memory_bytes / MIB,
                "start_timeout": self.start_timeout}

    @classmethod
    def from_dict(cls, data: dict[str, Any], default_start_timeout: float) -> Limits:
        """The limits a run was launched with (``run.json``'s ``limits``)."""
        memory = data.get("memory_mb")
        return cls(real_time=data.get("real_time"),
                   memory_bytes=None if memory is None else int(memory * MIB),
                   start_timeout=data.get("start_timeout") or default_start_timeout)


def adopted(config: Config, record: dict[str, Any]) -> Limits:
    """The limits of a run adopted after a restart: those its launch saved (the run
    dir's ``run.json`` is the script's to rewrite); for a launch whose save a crash cut
    short, those of its POST and the backend's defaults (its experiment.json's copy in
    the run dir is the script's too)."""
    saved = record.get("effective_limits")
    if saved is not None:
        return Limits.from_dict(saved, config.start_timeout)
    return resolve(config, {}, record["timeout"], record["limits"])


def _lenient(read: Any, config: dict[str, Any]) -> dict[str, float]:
    """A section of experiment.json, or {} if it is malformed: the simulation server
    refuses it with a clear error at initialize."""
    try:
        return read(config)
    except InvalidExperiment:
        return {}


def _first(*values: float | None) -> float | None:
    for value in values:
        if value:
            return float(value)
    return None


def resolve(config: Config, experiment_config: dict[str, Any], timeout: dict[str, float],
            limits: dict[str, float]) -> Limits:
    """POST values win over experiment.json's, which win over the backend's defaults."""
    exp_timeout = _lenient(experiment.timeout, experiment_config)
    exp_limits = _lenient(experiment.limits, experiment_config)
    memory_mb = _first(limits.get("memory_mb"), exp_limits.get("memory_mb"),
                       config.memory_limit_mb)
    return Limits(
        real_time=_first(timeout.get("real_time"), exp_timeout.get("real_time"),
                         config.real_time_limit),
        memory_bytes=None if memory_mb is None else int(memory_mb * MIB),
        start_timeout=_first(limits.get("start_timeout"), exp_limits.get("start_timeout"),
                             config.start_timeout) or config.start_timeout,
    )
