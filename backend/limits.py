"""The limits of one simulation, resolved from POST, experiment.json and config."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from backend.config import Config
from backend.errors import BadRequest

#: Keys of ``limits`` in POST and experiment.json.
LIMIT_KEYS = {"memory_mb", "start_timeout"}


@dataclass(frozen=True)
class Limits:
    """Effective limits; None means unlimited."""

    real_time: float | None
    memory_bytes: int | None
    start_timeout: float

    def to_dict(self) -> dict[str, Any]:
        return {"real_time": self.real_time,
                "memory_mb": None if self.memory_bytes is None else self.memory_bytes / 2**20,
                "start_timeout": self.start_timeout}


def check_positive(name: str, value: Any, code: str) -> float:
    """Return ``value`` if it is a positive finite number.

    Raises:
        BadRequest: with ``code``, naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise BadRequest(f"{name} must be a positive number", code=code)
    return float(value)


def check_limits(limits: Any) -> dict[str, float]:
    """Validate a ``limits`` object from POST.

    Raises:
        BadRequest: ``invalid_limits``.
    """
    if not isinstance(limits, dict) or set(limits) - LIMIT_KEYS:
        raise BadRequest("'limits' must be an object with 'memory_mb' and/or 'start_timeout'",
                         code="invalid_limits")
    return {k: check_positive(f"limits.{k}", v, "invalid_limits") for k, v in limits.items()}


def _first(*values: Any) -> float | None:
    for value in values:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def resolve(config: Config, experiment: dict[str, Any], timeout: dict[str, Any],
            limits: dict[str, Any]) -> Limits:
    """POST values win over experiment.json's, which win over the backend's defaults."""
    exp_timeout = experiment.get("timeout") if isinstance(experiment.get("timeout"), dict) else {}
    exp_limits = experiment.get("limits") if isinstance(experiment.get("limits"), dict) else {}
    memory_mb = _first(limits.get("memory_mb"), exp_limits.get("memory_mb"),
                       config.memory_limit_mb)
    return Limits(
        real_time=_first(timeout.get("real_time"), exp_timeout.get("real_time"),
                         config.real_time_limit),
        memory_bytes=None if memory_mb is None else int(memory_mb * 2**20),
        start_timeout=_first(limits.get("start_timeout"), exp_limits.get("start_timeout"),
                             config.start_timeout) or config.start_timeout,
    )
