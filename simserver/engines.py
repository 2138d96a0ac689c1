"""Engines: the parts of the kernel that simulate something.

An engine advances by ``step(t, dt)`` and exchanges data with the others through
datapacks (``get_datapack`` / ``set_datapack``) that transceiver functions move
between steps. Engine types are looked up by the ``type`` of each entry of
``experiment.json``'s ``engines``.
"""
from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from lifecycle import experiment
from lifecycle.errors import InvalidExperiment
from simserver.errors import ExperimentError, KernelError

logger = logging.getLogger(__name__)


class Engine:
    """Base class of engines. ``name`` is the key in ``experiment.json``."""

    type_name = ""

    def __init__(self, name: str, config: dict[str, Any], experiment_dir: Path) -> None:
        self.name = name
        self.config = config
        self.experiment_dir = experiment_dir

    def initialize(self, params: dict[str, Any]) -> None:
        """Build the engine's model at t = 0."""

    def check_timestep(self, timestep: float) -> None:
        """Refuse a kernel timestep this engine cannot step by (at initialize, not
        at the first step).

        Raises:
            ExperimentError: the timestep does not suit the engine.
        """

    def step(self, t: float, dt: float) -> None:
        """Advance the model from ``t`` to ``t + dt`` (ms)."""
        raise NotImplementedError

    def steps_compose(self) -> bool:
        """Whether one ``step(t, k * dt)`` is the same simulation as ``k`` steps of ``dt``
        (nothing in the engine reads or changes the model between steps), so that the
        run loop may advance several steps with one call. False unless an engine says so:
        a Python model steps by what it is given."""
        return False

    def get_datapack(self, name: str) -> Any:
        raise KernelError(f"engine {self.name!r} has no datapack {name!r}", self.name)

    def set_datapack(self, name: str, value: Any) -> None:
        raise KernelError(f"engine {self.name!r} takes no datapack {name!r}", self.name)

    def finalize(self, results_dir: Path) -> None:
        """Save what the engine recorded; called once when the run ends, however, and
        before the end is reported: what it writes is the run's data."""

    def draw(self, results_dir: Path) -> None:
        """Draw plots of what :meth:`finalize` saved; called after the end is reported
        (a plot takes ~0.5 s of matplotlib, and nothing waits for it but the upload)."""

    def shutdown(self) -> None:
        """Release resources; called after :meth:`finalize` and :meth:`draw`."""

    def version(self) -> str | None:
        return None


class PythonEngine(Engine):
    """An engine whose model is a user class, named ``"module.py:Class"``.

    The class is instantiated without arguments; ``initialize(params)`` (optional)
    builds it, ``step(t, dt)`` advances it. Datapacks go through the model's
    ``get_datapack(name)`` / ``set_datapack(name, value)`` when it defines them,
    else through its attributes.
    """

    type_name = "python"

    def initialize(self, params: dict[str, Any]) -> None:
        spec = self.config.get("model")
        if not isinstance(spec, str):
            raise ExperimentError(f"engine {self.name!r}: 'model' must be \"module.py:Class\"")
        cls = load_object(spec, self.experiment_dir)
        try:
            self.model = cls()
            init = getattr(self.model, "initialize", None)
            if init is not None:
                init({**self.config.get("params", {}), **params})
        except Exception as exc:
            raise KernelError(f"engine {self.name!r}: {spec} failed to initialize: "
                              f"{type(exc).__name__}: {exc}", self.name) from exc
        if not callable(getattr(self.model, "step", None)):
            raise KernelError(f"engine {self.name!r}: {spec} has no step(t, dt) method",
                              self.name)
        self._step = self.model.step
        self._get = getattr(self.model, "get_datapack", None)
        self._set = getattr(self.model, "set_datapack", None)

    def step(self, t: float, dt: float) -> None:
        self._step(t, dt)

    def get_datapack(self, name: str) -> Any:
        if self._get is not None:
            return self._get(name)
        try:
            return getattr(self.model, name)
        except AttributeError:
            return super().get_datapack(name)

    def set_datapack(self, name: str, value: Any) -> None:
        if self._set is not None:
            self._set(name, value)
        else:
            setattr(self.model, name, value)

    def finalize(self, results_dir: Path) -> None:
        save = getattr(self.model, "save_results", None)
        if save is not None:
            save(results_dir)

    def version(self) -> str | None:
        return sys.version.split()[0]


#: Engine classes by ``type``; other engine types register here. An entry may name
#: its class as ``"module:Class"``, imported when an experiment first uses the type, so
#: heavy simulators (NEST) load only in simulations that need them.
ENGINE_TYPES: dict[str, type[Engine] | str] = {
    "python": PythonEngine,
    "nest": "simserver.nest_engine:NestEngine",
    "neuron": "simserver.neuron_engine:NeuronEngine",
}


def engine_class(type_name: str) -> type[Engine] | None:
    """Return the engine class registered for ``type_name``, importing it if named."""
    entry = ENGINE_TYPES.get(type_name)
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        entry = ENGINE_TYPES[type_name] = getattr(importlib.import_module(module), name)
    return entry


def number_setting(engine: str, settings: dict[str, Any], key: str, default: Any,
                   kind: type = float, positive: bool = True) -> Any:
    """Read a number of an engine's settings (``None`` when absent and no default).

    Raises:
        ExperimentError: not a finite ``kind`` (an int is a fine float), or not positive
            when it must be.
    """
    value = settings.get(key, default)
    if value is None:
        return None
    try:
        if positive:
            return experiment.positive_number(value, key, integer=kind is int)
        if kind is int and (isinstance(value, float) or isinstance(value, bool)):
            raise InvalidExperiment(f"'{key}' must be a whole number, not {value!r}")
        return kind(experiment.finite_number(value, key))
    except InvalidExperiment as exc:
        raise ExperimentError(f"engine {engine!r}: {exc}") from None


def module_name(path: str) -> str:
    """Turn ``"pkg/world.py"`` into the importable name ``"pkg.world"``.

    Raises:
        ExperimentError: the path is not a relative ``.py`` file inside the experiment.
    """
    parts = Path(path).parts
    if not path.endswith(".py") or not parts or any(p in ("..", "") for p in parts) \
            or Path(path).is_absolute():
        raise ExperimentError(f"{path!r} is not a .py file inside the experiment")
    return ".".join(parts)[: -len(".py")]


def load_module(path: str, experiment_dir: Path) -> Any:
    """Import the experiment's module at ``path`` (relative to the experiment).

    Raises:
        ExperimentError: the file is missing or fails to import.
    """
    name = module_name(path)
    if not (experiment_dir / path).is_file():
        raise ExperimentError(f"{path!r} does not exist in the experiment")
    if str(experiment_dir) not in sys.path:
        sys.path.insert(0, str(experiment_dir))
    try:
        module = importlib.import_module(name)
    except SyntaxError as exc:
        raise ExperimentError(f"{path}: syntax error at line {exc.lineno}: {exc.msg}") from exc
    except Exception as exc:
        raise ExperimentError(f"{path} failed to import: {type(exc).__name__}: {exc}") from exc
    found = getattr(module, "__file__", None)
    if found is None or Path(found).resolve() != (experiment_dir / path).resolve():
        raise ExperimentError(f"{path} clashes with the installed module {name!r} "
                              f"({found or 'built in'}); rename the file")
    return module


def load_object(spec: str, experiment_dir: Path) -> Callable:
    """Return the object named by ``"module.py:Name"`` in the experiment.

    Raises:
        ExperimentError: bad spec, missing file or missing name.
    """
    path, sep, attr = spec.partition(":")
    if not sep or not attr:
        raise ExperimentError(f"{spec!r} must have the form \"module.py:Name\"")
    module = load_module(path, experiment_dir)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ExperimentError(f"{path} defines no {attr!r}") from None
