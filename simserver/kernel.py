"""The kernel: engines stepped in lockstep, transceivers between steps."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from lifecycle import experiment
from lifecycle.errors import InvalidExperiment
from simserver.engines import ENGINE_TYPES, Engine, engine_class, load_module
from simserver.errors import ExperimentError, KernelError
from simserver.script import is_transceiver

logger = logging.getLogger(__name__)

Transceiver = Callable[[dict[str, Engine], float], None]


class Kernel:
    """Steps every engine by ``timestep`` ms, in the order ``experiment.json`` names them.

    Before each step the transceiver functions run with the engines and the
    current time: they read datapacks the last step produced and set the inputs
    of the next (a closed loop, as in the NRP).
    """

    def __init__(self, engines: dict[str, Engine], transceivers: list[Transceiver],
                 timestep: float) -> None:
        self.engines = engines
        self.transceivers = transceivers
        self.timestep = timestep
        self.steps = 0
        self._engine_list = list(engines.values())

    @property
    def time(self) -> float:
        """Simulated time in ms (steps × timestep, so no rounding drift)."""
        return self.steps * self.timestep

    def step(self) -> None:
        for tf in self.transceivers:
            tf(self.engines, self.steps * self.timestep)
        self.advance(1)

    def steps_compose(self) -> bool:
        """Whether :meth:`advance` may take several steps at once: no transceiver runs
        between steps, and every engine says one long step is the same as many."""
        return not self.transceivers and all(e.steps_compose() for e in self._engine_list)

    def advance(self, n: int) -> None:
        """Advance ``n`` steps with one call of each engine, no transceivers between
        (several only when :meth:`steps_compose`; else use :meth:`step`)."""
        t = self.steps * self.timestep
        for engine in self._engine_list:
            engine.step(t, n * self.timestep)
        self.steps += n

    def finalize(self, results_dir: Path) -> None:
        """Let every engine save its results; one engine failing does not stop the rest."""
        for engine in self._engine_list:
            try:
                engine.finalize(results_dir)
            except Exception:
                logger.exception("engine %s failed to save its results", engine.name)

    def draw(self, results_dir: Path) -> None:
        """Let every engine draw its plots (after the end is reported); one engine
        failing does not stop the rest."""
        for engine in self._engine_list:
            try:
                engine.draw(results_dir)
            except Exception:
                logger.exception("engine %s failed to draw its plots", engine.name)

    def shutdown(self) -> None:
        for engine in self._engine_list:
            try:
                engine.shutdown()
            except Exception:
                logger.exception("engine %s failed to shut down", engine.name)


def parse_timestep(config: dict[str, Any]) -> float:
    """Return ``experiment.json``'s ``timestep`` in ms (default 1.0).

    Raises:
        ExperimentError: not a positive finite number.
    """
    try:
        return experiment.timestep(config)
    except InvalidExperiment as exc:
        raise ExperimentError(str(exc)) from None


def build_engines(config: dict[str, Any], experiment_dir: Path,
                  params: dict[str, Any], timestep: float = 1.0) -> dict[str, Engine]:
    """Construct and initialize the engines ``experiment.json`` names.

    Raises:
        ExperimentError: an engine entry is malformed or of an unknown type.
        KernelError: an engine failed to build.
    """
    specs = config.get("engines", {})
    if not isinstance(specs, dict):
        raise ExperimentError("'engines' must be an object of name -> engine config")
    engines: dict[str, Engine] = {}
    try:
        for name, spec in specs.items():
            engines[name] = build_engine(name, spec, experiment_dir, params)
            engines[name].check_timestep(timestep)
    except BaseException:
        # The engines already built hold resources (NEST's one kernel per process).
        Kernel(engines, [], 1.0).shutdown()
        raise
    return engines


def build_engine(name: str, spec: Any, experiment_dir: Path,
                 params: dict[str, Any]) -> Engine:
    """Construct and initialize one engine of ``experiment.json``'s ``engines``.

    Raises:
        ExperimentError: the entry is malformed or of an unknown type.
        KernelError: the engine failed to build.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ExperimentError(f"engine {name!r} needs a 'type'")
    cls = engine_class(spec["type"])
    if cls is None:
        known = ", ".join(sorted(ENGINE_TYPES))
        raise ExperimentError(f"engine {name!r} has unknown type {spec['type']!r}; "
                              f"known types: {known}")
    engine = cls(name, spec, experiment_dir)
    engine.initialize(params)
    logger.info("engine %s (%s) initialized", name, spec["type"])
    return engine


def load_transceivers(config: dict[str, Any], experiment_dir: Path) -> list[Transceiver]:
    """Return the ``@transceiver`` functions of the modules named by ``transceivers``.

    Raises:
        ExperimentError: a module is missing, fails to import or marks no function.
    """
    paths = config.get("transceivers") or []
    if isinstance(paths, str):
        paths = [paths]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ExperimentError("'transceivers' must be a file name or a list of them")
    found: list[Transceiver] = []
    for path in paths:
        module = load_module(path, experiment_dir)
        marked = [obj for obj in vars(module).values() if is_transceiver(obj)]
        if not marked:
            raise ExperimentError(f"{path} defines no function marked @transceiver")
        found.extend(marked)
    return found


def build_kernel(config: dict[str, Any], experiment_dir: Path,
                 params: dict[str, Any]) -> Kernel:
    """Build the kernel for an experiment, at t = 0.

    Raises:
        ExperimentError, KernelError: see :func:`build_engines`.
    """
    timestep = parse_timestep(config)
    engines = build_engines(config, experiment_dir, params, timestep)
    try:
        transceivers = load_transceivers(config, experiment_dir)
    except BaseException:
        Kernel(engines, [], timestep).shutdown()
        raise
    return Kernel(engines, transceivers, timestep)


__all__ = ["Kernel", "KernelError", "build_kernel", "parse_timestep"]
