"""``experiment.json``: reading it and checking the values both processes act on.

The backend checks an experiment when it is stored and resolves a run's limits from
it; the simulation server builds the kernel from it. Both read it here, so a value
one side accepts the other cannot refuse. Standard library only.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lifecycle.errors import InvalidExperiment

EXPERIMENT_FILE = "experiment.json"

#: Keys of ``timeout`` (sim_time in ms of simulated time, real_time in s of wall time).
TIMEOUT_KEYS = frozenset({"sim_time", "real_time"})
#: Keys of ``limits``.
LIMIT_KEYS = frozenset({"memory_mb", "start_timeout"})
#: Keys of ``resources``: what a run reserves of the host while it holds a process.
RESOURCE_KEYS = frozenset({"threads", "memory_mb"})
DEFAULT_TIMESTEP = 1.0


def _finite(value: float | int) -> bool:
    """True for a finite float and an int a float can hold (JSON has 400-digit ones)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def positive_number(value: Any, name: str, *, integer: bool = False) -> float | int:
    """Return ``value`` if it is a positive finite number (an int when ``integer``).

    Raises:
        InvalidExperiment: naming ``name`` and the value.
    """
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not _finite(value) \
            or value <= 0:
        kind = "whole number" if integer else "number"
        raise InvalidExperiment(f"'{name}' must be a positive {kind}, not {value!r}")
    return int(value) if integer else float(value)


def finite_number(value: Any, name: str) -> float:
    """Return ``value`` if it is a finite number (of any sign).

    Raises:
        InvalidExperiment: naming ``name`` and the value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        raise InvalidExperiment(f"'{name}' must be a number, not {value!r}")
    return float(value)


def optional_positive(data: dict[str, Any], key: str, name: str | None = None, *,
                      integer: bool = False) -> float | int | None:
    """``data[key]`` as a positive number, or None when absent or null.

    Raises:
        InvalidExperiment: present but not a positive finite number.
    """
    value = data.get(key)
    if value is None:
        return None
    return positive_number(value, name or key, integer=integer)


def parse_experiment(raw: bytes | str) -> dict[str, Any]:
    """Parse the text of an ``experiment.json``.

    Raises:
        InvalidExperiment: not JSON, or not an object.
    """
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidExperiment(f"{EXPERIMENT_FILE} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidExperiment(f"{EXPERIMENT_FILE} must hold a JSON object")
    return data


def read_experiment(folder: Path) -> dict[str, Any]:
    """Read and parse ``folder/experiment.json``.

    Raises:
        InvalidExperiment: missing, not JSON, or not an object.
    """
    try:
        raw = (Path(folder) / EXPERIMENT_FILE).read_bytes()
    except FileNotFoundError:
        raise InvalidExperiment(f"the experiment has no {EXPERIMENT_FILE}") from None
    return parse_experiment(raw)


def main_script(config: dict[str, Any]) -> str:
    """The experiment's ``main_script``.

    Raises:
        InvalidExperiment: missing or not a non-empty string.
    """
    script = config.get("main_script")
    if not isinstance(script, str) or not script:
        raise InvalidExperiment(f"{EXPERIMENT_FILE} must name its 'main_script'")
    return script


def timestep(config: dict[str, Any]) -> float:
    """``timestep`` in ms of simulated time per kernel step (default 1.0).

    Raises:
        InvalidExperiment: not a positive finite number.
    """
    return positive_number(config.get("timestep", DEFAULT_TIMESTEP), "timestep")


def section(config: dict[str, Any], key: str, keys: frozenset[str] | None = None,
            ) -> dict[str, float]:
    """A ``timeout`` or ``limits`` object with positive numbers as values ({} if absent).

    Raises:
        InvalidExperiment: not an object, an unknown key, or a value that is not a
            positive number.
    """
    value = config.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or (keys is not None and set(value) - keys):
        names = " and/or ".join(f"'{k}'" for k in sorted(keys or ()))
        raise InvalidExperiment(f"'{key}' must be an object with {names}")
    return {k: positive_number(v, f"{key}.{k}") for k, v in value.items() if v is not None}


def timeout(config: dict[str, Any]) -> dict[str, float]:
    """The checked ``timeout`` object: ``sim_time`` (ms) and ``real_time`` (s)."""
    return section(config, "timeout", TIMEOUT_KEYS)


def limits(config: dict[str, Any]) -> dict[str, float]:
    """The checked ``limits`` object: ``memory_mb`` and ``start_timeout`` (s)."""
    return section(config, "limits", LIMIT_KEYS)


def resources(config: dict[str, Any]) -> dict[str, float | int]:
    """The checked ``resources`` object: ``threads`` (a whole number) and ``memory_mb``.

    Raises:
        InvalidExperiment: not an object, an unknown key, or a value that is not a
            positive number (a positive whole number for ``threads``).
    """
    checked: dict[str, float | int] = section(config, "resources", RESOURCE_KEYS)
    if "threads" in checked:
        checked["threads"] = positive_number(config["resources"]["threads"],
                                             "resources.threads", integer=True)
    return checked
