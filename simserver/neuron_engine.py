"""The ``neuron`` engine: a NEURON model that the experiment builds and the kernel steps.

``experiment.json``::

    "engines": {"cell": {"type": "neuron", "model": "cell.py", "dt": 0.025,
                         "v_init": -65.0, "params": {"diam": 20.0},
                         "record": {"m": "soma(0.5).m_hh"}}}

``cell.py`` defines ``build(h, params) -> dict[str, Any]``: ``h`` is ``neuron.h`` with
``stdrun.hoc`` loaded and ``h.dt`` set, ``params`` the engine's ``params`` overridden by
the run's. The dict names the model's recordings (``h.Vector`` objects the model set
recording with ``Vector.record``) and its parts (sections, point processes such as an
``IClamp``: anything else), which the engine keeps alive for the run and which
datapacks address as ``"<part>.<attribute>"``. The engine records ``t`` unless the
model did, applies ``record``, calls ``h.finitialize(v_init)``, then one
``h.continuerun`` per kernel step: the same simulation as one ``h.continuerun(tstop)``.
NEURON is imported only when an experiment has a neuron engine (see ``ENGINE_TYPES``).
"""
from __future__ import annotations

import logging
import os
import re
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from simserver.engines import Engine, load_module, module_name, number_setting
from simserver.errors import ExperimentError, KernelError
from simserver.traces import (
    TIME,
    plot_file,
    plot_voltages,
    save_traces,
    traces_file,
    voltage_names,
)

logger = logging.getLogger(__name__)

DEFAULT_DT = 0.025
DEFAULT_V_INIT = -65.0

#: What ``record`` may name: ``"soma(0.5).v"`` (a section's segment) or ``"stim.i"``.
_PROBE = re.compile(r"(?P<part>\w+)(?:\((?P<x>\d*\.?\d+)\))?\.(?P<variable>\w+)")


def import_neuron() -> Any:
    """Import NEURON without its GUI, which would only warn of a missing display.

    Raises:
        ImportError (or whatever loading NEURON's libraries raised): NEURON is unusable.
    """
    os.environ.setdefault("NEURON_MODULE_OPTIONS", "-nogui")
    began = time.monotonic()
    import neuron

    logger.info("imported: NEURON %s in %.2f s", neuron.__version__, time.monotonic() - began)
    return neuron


class NeuronEngine(Engine):
    """A NEURON model stepped in lockstep with the other engines.

    ``h`` is ``neuron.h``; ``recordings`` and ``parts`` split the dict ``build`` returned
    (plus ``t`` and the ``record`` probes). Datapacks: ``get_datapack(recording)`` is its
    last sample (a float) and ``step_samples(recording)`` all the samples of the last
    step; ``get_datapack("stim.amp")`` / ``set_datapack("stim.amp", 0.3)`` read and set
    an attribute of a part, the setting acting from the next step.
    """

    type_name = "neuron"
    #: NEURON is one interpreter per process: at most one engine may own it.
    _owner: ClassVar[NeuronEngine | None] = None

    def __init__(self, name: str, config: dict[str, Any], experiment_dir: Path) -> None:
        super().__init__(name, config, experiment_dir)
        self.neuron: Any = None
        self.h: Any = None
        self.recordings: dict[str, Any] = {}
        self.parts: dict[str, Any] = {}
        self.dt: float | None = None
        self._marks: dict[str, int] = {}
        #: What finalize saved, for draw: (traces, voltage names, t_end).
        self._saved: tuple[dict[str, Any], list[str], float] | None = None

    # -- building ---------------------------------------------------------------

    def initialize(self, params: dict[str, Any]) -> None:
        """Import NEURON, build the model, record, and initialize it at t = 0.

        Raises:
            ExperimentError: bad engine config or a missing model file.
            KernelError: NEURON cannot be imported, the model fails to import, lacks
                ``build``, or ``build``/NEURON raises (the message is NEURON's).
        """
        model = self.config.get("model")
        if not isinstance(model, str):
            raise ExperimentError(f"engine {self.name!r}: 'model' must name a .py file "
                                  "that defines build(h, params)")
        module_name(model)
        if not (self.experiment_dir / model).is_file():
            raise ExperimentError(f"engine {self.name!r}: {model!r} does not exist in the "
                                  "experiment")
        settings = {**self.config.get("params", {}), **params}
        dt = self._setting(settings, "dt", DEFAULT_DT)
        v_init = self._setting(settings, "v_init", DEFAULT_V_INIT, positive=False)
        self._claim_interpreter()
        try:
            self._load(model, settings, dt, v_init)
        except BaseException as exc:
            self.shutdown()
            _let_go_of_frames(exc)
            raise

    def _setting(self, settings: dict[str, Any], key: str, default: float,
                 positive: bool = True) -> float:
        """``key`` of the run's params, else of the engine config, else ``default``."""
        value = settings[key] if key in settings else self.config.get(key, default)
        return number_setting(self.name, {key: value}, key, default, positive=positive)

    def _claim_interpreter(self) -> None:
        owner = NeuronEngine._owner
        if owner is not None and owner is not self:
            raise KernelError(f"engine {self.name!r}: NEURON is already used by engine "
                              f"{owner.name!r}; NEURON has one interpreter per process, so "
                              "an experiment can have one neuron engine", self.name)
        NeuronEngine._owner = self

    def _load(self, model: str, params: dict[str, Any], dt: float, v_init: float) -> None:
        try:
            self.neuron = import_neuron()
        except Exception as exc:  # ImportError, or OSError from NEURON's shared libraries
            raise self._error("NEURON cannot be imported", exc) from exc
        h = self.h = self.neuron.h
        if not h.load_file("stdrun.hoc"):
            raise KernelError(f"engine {self.name!r}: NEURON cannot load stdrun.hoc", self.name)
        build = self._build_function(model)
        h.cvode.active(0)
        h.dt = dt
        built = self._build(model, build, params)
        self._fix_steps(dt)
        self._keep(model, built)
        self._record_probes(self.config.get("record"))
        try:
            h.finitialize(v_init)
        except Exception as exc:
            raise self._error(f"NEURON failed to initialize at v_init = {v_init:g} mV",
                              exc) from exc

    def _build_function(self, model: str) -> Callable:
        try:
            module = load_module(model, self.experiment_dir)
        except ExperimentError as exc:
            # The file is there: a syntax error or a failing import is the model's fault.
            raise KernelError(f"engine {self.name!r}: {exc}", self.name) from exc
        build = getattr(module, "build", None)
        if not callable(build):
            raise KernelError(f"engine {self.name!r}: {model} defines no build(h, params)",
                              self.name)
        return build

    def _build(self, model: str, build: Callable, params: dict[str, Any]) -> dict[str, Any]:
        began = time.monotonic()
        try:
            built = build(self.h, params)
        except Exception as exc:
            logger.exception("engine %s: %s build() raised", self.name, model)
            raise self._error(f"{model} build() failed", exc) from exc
        if not isinstance(built, dict) or not all(
                isinstance(name, str) and name.isidentifier() for name in built):
            raise KernelError(f"engine {self.name!r}: {model} build() must return a dict of "
                              "name -> h.Vector (recordings) or model part, names being "
                              f"identifiers, not {_describe(built)}", self.name)
        logger.info("built: engine %s, %s: %s in %.2f s", self.name, model,
                    ", ".join(built) or "nothing named", time.monotonic() - began)
        return built

    def _keep(self, model: str, built: dict[str, Any]) -> None:
        """Split ``built`` into recordings and parts; record ``t`` if the model did not."""
        vector = self.h.Vector
        self.recordings = {name: value for name, value in built.items()
                           if isinstance(value, vector)}
        # Held for the run: NEURON deletes a section when Python lets go of it.
        self.parts = {name: value for name, value in built.items()
                      if not isinstance(value, vector)}
        if TIME in self.parts:
            raise KernelError(f"engine {self.name!r}: {model} build() returned {TIME!r} but "
                              "not as an h.Vector recording time", self.name)
        if TIME not in self.recordings:
            self.recordings[TIME] = self.h.Vector().record(self.h._ref_t)

    def _record_probes(self, probes: Any) -> None:
        """Record what ``record`` names, e.g. ``{"m": "soma(0.5).m_hh"}``.

        Raises:
            ExperimentError: ``record`` is malformed or names no part.
            KernelError: NEURON has no such variable there.
        """
        if probes is None:
            return
        if not isinstance(probes, dict):
            raise ExperimentError(f"engine {self.name!r}: 'record' must be an object of "
                                  "name -> \"part(x).variable\" or \"part.variable\"")
        for name, probe in probes.items():
            if not isinstance(name, str) or not name.isidentifier() \
                    or name in self.recordings or name in self.parts:
                raise ExperimentError(f"engine {self.name!r}: 'record' name {name!r} must be "
                                      "an identifier that build() did not return")
            self.recordings[name] = self.h.Vector().record(self._reference(name, probe))

    def _reference(self, name: str, probe: Any) -> Any:
        match = _PROBE.fullmatch(probe) if isinstance(probe, str) else None
        part = self.parts.get(match["part"]) if match else None
        if part is None:
            raise ExperimentError(
                f"engine {self.name!r}: 'record' {name!r} must be \"part(x).variable\" or "
                f"\"part.variable\" with a part build() returned ({', '.join(self.parts)}), "
                f"not {probe!r}")
        try:
            where = part(float(match["x"])) if match["x"] is not None else part
            return getattr(where, f"_ref_{match['variable']}")
        except Exception as exc:
            raise self._error(f"cannot record {probe!r}", exc) from exc

    def _fix_steps(self, dt: float) -> None:
        """Fixed steps of ``h.dt``, one ``fadvance`` per stdrun step (see :meth:`step`).

        Raises:
            KernelError: ``build`` switched CVode on.
        """
        h = self.h
        if h.cvode.active():
            # continuerun would stop CVode exactly at every kernel step: another solution
            # than one continuerun(tstop), and a repeated sample at each step's end.
            raise KernelError(f"engine {self.name!r}: build() switched CVode on; the neuron "
                              "engine steps with NEURON's fixed time step dt", self.name)
        # A model that called stdinit() or setdt() may have set several fadvance calls per
        # stdrun step: continuerun would then overshoot the end of a kernel step.
        h.nstep_steprun = 1
        self.dt = float(h.dt)
        if self.dt != dt:
            logger.warning("engine %s: build() set h.dt = %g ms instead of %g ms; stepping by "
                           "%g ms", self.name, self.dt, dt, self.dt)

    def _error(self, doing: str, exc: BaseException) -> KernelError:
        """A KernelError carrying NEURON's (or ``build``'s) own message."""
        text = str(exc).strip()
        what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        return KernelError(f"engine {self.name!r}: {doing}: {what}", self.name)

    # -- stepping ----------------------------------------------------------------

    def check_timestep(self, timestep: float) -> None:
        steps = timestep / self.dt
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps) or round(steps) < 1:
            raise ExperimentError(f"engine {self.name!r}: the timestep {timestep:g} ms is not "
                                  f"a whole multiple of NEURON's dt {self.dt:g} ms")

    def step(self, t: float, dt: float) -> None:
        """Advance NEURON to the kernel's time after this step with ``h.continuerun``.

        continuerun's loop stops at ``t >= tstop - dt/2``, so each step makes exactly
        ``timestep / h.dt`` fadvance calls whatever rounding has crept into ``h.t``, and
        a run cut into steps is the same sequence of fadvance calls as one
        ``h.continuerun(tstop)``: bit-identical traces. The loop runs in hoc, which
        costs less than calling ``h.fadvance()`` from Python at every NEURON step.

        Raises:
            KernelError: NEURON failed while running (its message).
        """
        # The kernel's own clock, steps x timestep, not t + dt, which may round apart.
        target = (round(t / dt) + 1) * dt
        self._marks = {name: int(vector.size()) for name, vector in self.recordings.items()}
        try:
            self.h.continuerun(target)
        except Exception as exc:
            raise self._error(f"NEURON failed to run from t = {t:g} to {target:g} ms",
                              exc) from exc

    # -- datapacks -----------------------------------------------------------------

    def get_datapack(self, name: str) -> Any:
        """A recording's last sample (float), or the attribute ``"<part>.<attribute>"``.

        Raises:
            KernelError: no such recording or part, or NEURON cannot read the attribute.
        """
        vector = self.recordings.get(name)
        if vector is not None:
            size = int(vector.size())
            if not size:
                raise KernelError(f"engine {self.name!r}: recording {name!r} has no sample "
                                  "yet", self.name)
            return float(vector.x[size - 1])
        part, attribute = self._attribute(name)
        if part is None:
            return super().get_datapack(name)
        try:
            return getattr(part, attribute)
        except Exception as exc:
            raise self._error(f"cannot read {name!r}", exc) from exc

    def step_samples(self, name: str) -> np.ndarray:
        """The samples recording ``name`` took during the last step (a copy); before the
        first step, the sample at t = 0.

        Raises:
            KernelError: no such recording.
        """
        vector = self.recordings.get(name)
        if vector is None:
            raise KernelError(f"engine {self.name!r} has no recording {name!r}", self.name)
        # A copy: the view dies when the vector grows at the next step.
        return np.array(vector.as_numpy()[self._marks.get(name, 0):])

    def set_datapack(self, name: str, value: Any) -> None:
        """Set ``"<part>.<attribute>"`` (``"stim.amp"``, ``"soma.gnabar_hh"``) from the
        next step on.

        Raises:
            KernelError: not a part's attribute, or NEURON refuses the value.
        """
        part, attribute = self._attribute(name)
        if part is None:
            super().set_datapack(name, value)
        try:
            setattr(part, attribute, value)
        except Exception as exc:
            raise self._error(f"cannot set {name!r} to {value!r}", exc) from exc

    def _attribute(self, name: str) -> tuple[Any, str]:
        """(part, attribute) named by ``"<part>.<attribute>"``; (None, "") otherwise."""
        part, dot, attribute = name.partition(".")
        if not dot or not attribute.isidentifier() or part not in self.parts:
            return None, ""
        return self.parts[part], attribute

    # -- the end ---------------------------------------------------------------------

    def finalize(self, results_dir: Path) -> None:
        """Save every recording to ``<engine>.npz`` (:meth:`draw` plots the voltages)."""
        if not self.recordings:
            return
        traces = {name: np.array(vector.as_numpy()) for name, vector in self.recordings.items()}
        path = save_traces(traces, results_dir / traces_file(self.name))
        t_end = float(self.h.t)
        logger.info("saved: %s (%s) up to t = %g ms", path.name, ", ".join(
            f"{name} {len(values)} samples" for name, values in traces.items()), t_end)
        names = voltage_names(traces)
        if not names:
            logger.info("engine %s: no voltage recording (named v or *_v) to plot", self.name)
            return
        self._saved = (traces, names, t_end)

    def draw(self, results_dir: Path) -> None:
        """Plot the voltage traces :meth:`finalize` saved."""
        if self._saved is None:
            return
        traces, names, t_end = self._saved
        plot_voltages(traces, names, results_dir / plot_file(self.name),
                      f"engine {self.name}: up to t = {t_end:g} ms")

    def shutdown(self) -> None:
        # Letting go of the parts deletes the model's sections, so NEURON is clean for
        # the next engine of this process (tests build many).
        self.recordings, self.parts, self._marks = {}, {}, {}
        if NeuronEngine._owner is self:
            NeuronEngine._owner = None

    def version(self) -> str | None:
        return self.neuron.__version__ if self.neuron is not None else None


def _let_go_of_frames(exc: BaseException) -> None:
    """Clear the local variables of the finished frames of ``exc`` and its causes.

    They hold what ``build`` made, and NEURON keeps a section for as long as Python
    does: whoever keeps the exception (a log record, a test) would keep the model's
    sections in this process's NEURON, for the next engine to simulate as well.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        bad = [name for name in value if not (isinstance(name, str) and name.isidentifier())]
        return f"a dict with the name {bad[0]!r}"
    return type(value).__name__
