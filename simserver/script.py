"""What a simulation script may import.

The names are also injected into the main script's globals, so both styles work::

    from simserver.script import sim, file_logger, SimulationTimeout
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from simserver.errors import SimulationStopped, SimulationTimeout

#: The running simulation (a ``simserver.runloop.Simulation``); set by the server
#: before the script runs.
sim: Any = None

#: Writes to ``logs/simulation.log``.
file_logger = logging.getLogger("simulation")

_TRANSCEIVER_MARK = "__simserver_transceiver__"


def transceiver(func: Callable) -> Callable:
    """Mark ``func(engines, t)`` as a transceiver function.

    The kernel calls every marked function of the experiment's transceivers module,
    in the order they are defined, before each step: read datapacks from some
    engines, set datapacks on others.
    """
    setattr(func, _TRANSCEIVER_MARK, True)
    return func


def is_transceiver(obj: object) -> bool:
    return callable(obj) and getattr(obj, _TRANSCEIVER_MARK, False) is True


__all__ = ["SimulationStopped", "SimulationTimeout", "file_logger", "sim", "transceiver"]
