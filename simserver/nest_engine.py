"""The ``nest`` engine: a NEST network that the experiment builds and the kernel steps.

``experiment.json``::

    "engines": {"brain": {"type": "nest", "network": "brain.py", "seed": 12345,
                          "threads": 1, "resolution": 0.1, "params": {"n": 100}}}

``brain.py`` defines ``build(nest, params) -> dict[str, NodeCollection]``, naming the
network's populations and devices. The engine resets NEST, applies seed, threads and
resolution, calls ``build``, then runs one ``Prepare``, a ``Run(dt)`` per kernel step
and one ``Cleanup`` at the end: a run cut into steps, paused or not, is the same
simulation as one ``Simulate``. NEST is imported only when an experiment has a nest
engine (see ``ENGINE_TYPES``), so python-only simulations never load it.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, ClassVar

from simserver.engines import Engine, load_module, number_setting
from simserver.errors import ExperimentError, KernelError
from simserver.spikes import (
    RASTER_FILE, Spikes, SpikeTap, plot_raster, save_spikes, sorted_spikes,
)

logger = logging.getLogger(__name__)

#: NEST's verbosity unless the engine names another: INFO prints four lines per
#: ``Run``, that is per kernel step.
DEFAULT_VERBOSITY = "WARNING"


def import_nest() -> Any:
    """Import PyNEST, without the banner it would print at the top of every stdout.log.

    Raises:
        ImportError (or whatever loading NEST's libraries raised): NEST is unusable here.
    """
    os.environ.setdefault("PYNEST_QUIET", "1")
    began = time.monotonic()
    import nest

    logger.info("imported: NEST %s in %.2f s", nest.__version__, time.monotonic() - began)
    return nest


class NestEngine(Engine):
    """A NEST network stepped in lockstep with the other engines.

    ``nest`` is the PyNEST module and ``nodes`` the dict ``build`` returned. Datapacks:
    ``get_datapack(population)`` gives ``{"count", "rate"}``, the spikes the population
    emitted during the last step and their mean rate per neuron in Hz;
    ``set_datapack(node, {"rate": 80.0})`` sets parameters of a node (a
    ``poisson_generator``'s rate, a ``dc_generator``'s amplitude) for the next step.
    """

    type_name = "nest"
    #: NEST is one kernel per process: at most one engine may own it.
    _owner: ClassVar[NestEngine | None] = None

    def __init__(self, name: str, config: dict[str, Any], experiment_dir: Path) -> None:
        super().__init__(name, config, experiment_dir)
        self.nest: Any = None
        self.nodes: dict[str, Any] = {}
        self.taps: dict[str, SpikeTap] = {}
        self._prepared = False
        self._dt: float | None = None
        self._timestep: float | None = None  # the kernel's, once checked
        self._nest_error: type[BaseException] = Exception
        #: What finalize saved, for draw: (spikes by recorder, t_end).
        self._saved: tuple[dict[str, Spikes], float] | None = None
        self._recorders: dict[str, set[str]] | None = None  # see _spike_recorders
        self._spikes_read: dict[str, tuple[float, Spikes]] = {}  # see spikes

    # -- building ---------------------------------------------------------------

    def initialize(self, params: dict[str, Any]) -> None:
        """Reset NEST, apply the kernel settings and build the network.

        Raises:
            ExperimentError: bad engine config, missing network file or ``build``.
            KernelError: NEST cannot be imported, refuses a setting, or ``build`` fails.
        """
        kernel = self._kernel_settings()
        network = self.config.get("network")
        if not isinstance(network, str):
            raise ExperimentError(f"engine {self.name!r}: 'network' must name a .py file "
                                  "that defines build(nest, params)")
        self._claim_kernel()
        try:
            self._load(network, kernel, {**self.config.get("params", {}), **params})
        except BaseException:
            self._release_kernel()
            raise

    def _kernel_settings(self) -> dict[str, Any]:
        """The kernel attributes the config asks for (NEST's default seed if none)."""
        settings = {
            "rng_seed": number_setting(self.name, self.config, "seed", None, int),
            "local_num_threads": number_setting(self.name, self.config, "threads", 1, int),
            "resolution": number_setting(self.name, self.config, "resolution", 0.1)}
        return {key: value for key, value in settings.items() if value is not None}

    def _claim_kernel(self) -> None:
        owner = NestEngine._owner
        if owner is not None and owner is not self:
            raise KernelError(f"engine {self.name!r}: NEST is already used by engine "
                              f"{owner.name!r}; NEST has one kernel per process, so an "
                              "experiment can have one nest engine", self.name)
        NestEngine._owner = self

    def _release_kernel(self) -> None:
        if NestEngine._owner is self:
            NestEngine._owner = None

    def _load(self, network: str, kernel: dict[str, Any], params: dict[str, Any]) -> None:
        try:
            self.nest = import_nest()
        except Exception as exc:  # ImportError, or OSError from NEST's shared libraries
            raise self._error("NEST cannot be imported", exc) from exc
        self._nest_error = self.nest.NESTError
        build = getattr(load_module(network, self.experiment_dir), "build", None)
        if not callable(build):
            raise ExperimentError(f"{network} defines no build(nest, params)")
        self._reset(kernel)
        self.nodes = self._build(network, build, params)

    def _reset(self, kernel: dict[str, Any]) -> None:
        nest = self.nest
        verbosity = self.config.get("verbosity", DEFAULT_VERBOSITY)
        level = getattr(nest.VerbosityLevel, verbosity, None) \
            if isinstance(verbosity, str) else None
        if level is None:
            names = ", ".join(level.name for level in nest.VerbosityLevel)
            raise ExperimentError(f"engine {self.name!r}: 'verbosity' must be one of {names}")
        try:
            nest.ResetKernel()
            nest.verbosity = level
            nest.set(**kernel)
        except self._nest_error as exc:
            raise self._error(f"NEST refused the kernel settings {kernel}", exc) from exc

    def _build(self, network: str, build: Callable, params: dict[str, Any]) -> dict[str, Any]:
        began = time.monotonic()
        try:
            nodes = build(self.nest, params)
        except Exception as exc:
            logger.exception("engine %s: %s build() raised", self.name, network)
            raise self._error(f"{network} build() failed", exc) from exc
        if not isinstance(nodes, dict) or not all(
                isinstance(k, str) and isinstance(v, self.nest.NodeCollection)
                for k, v in nodes.items()):
            raise KernelError(f"engine {self.name!r}: {network} build() must return a dict of "
                              f"name -> NodeCollection, not {type(nodes).__name__}", self.name)
        logger.info("built: engine %s, %s: %s, %d nodes in %.2f s", self.name, network,
                    ", ".join(nodes) or "nothing named", self.nest.network_size,
                    time.monotonic() - began)
        return nodes

    def _error(self, doing: str, exc: BaseException) -> KernelError:
        """A KernelError carrying NEST's (or ``build``'s) own message."""
        text = str(exc).strip()
        what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        return KernelError(f"engine {self.name!r}: {doing}: {what}", self.name)

    # -- stepping ----------------------------------------------------------------

    def check_timestep(self, timestep: float) -> None:
        resolution = self.nest.resolution
        steps = timestep / resolution
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps) or round(steps) < 1:
            raise ExperimentError(f"engine {self.name!r}: the timestep {timestep:g} ms is not "
                                  f"a multiple of NEST's resolution {resolution:g} ms")
        self._timestep = timestep

    def step(self, t: float, dt: float) -> None:
        if not self._prepared:
            self._prepare(dt)
        try:
            self.nest.Run(dt)
        except self._nest_error as exc:
            raise self._error(f"NEST failed to run {dt:g} ms at t = {t:g} ms", exc) from exc
        self._dt = dt
        for tap in self.taps.values():
            tap.read()

    def steps_compose(self) -> bool:
        """``Run(k * dt)`` is ``k`` runs of ``dt`` to NEST (it updates in slices of its
        own), unless a tap counts spikes per step."""
        return not self.taps

    def _prepare(self, dt: float) -> None:
        """Enter NEST's Prepare/Run/Cleanup context: before the first step, and after a
        change (:meth:`_leave_run`); taps open the files NEST creates in ``Prepare``."""
        self._spike_recorders()  # while reading them is cheap: no events yet
        try:
            self.nest.Prepare()
        except self._nest_error as exc:
            raise self._error("NEST failed to prepare the network", exc) from exc
        self._prepared = True
        for tap in self.taps.values():
            tap.open()
        # The kernel's step, not this call's: the run loop may advance several at once.
        self._quiet_min_delay_warning(self._timestep or dt)

    def _leave_run(self) -> None:
        """``Cleanup``, so the network may change before the next step prepares again.

        NEST creates and connects nodes only outside the context, and devices such as
        ``poisson_generator`` compute from their parameters in ``Prepare`` (a new rate
        set between two ``Run`` calls would be ignored). ``Simulate`` is the same cycle,
        so the simulation stays the one a sequence of ``Simulate`` calls gives.

        Raises:
            KernelError: NEST failed to clean up.
        """
        if not self._prepared:
            return
        self._prepared = False
        try:
            self.nest.Cleanup()
        except self._nest_error as exc:
            raise self._error("NEST failed to clean up", exc) from exc
        finally:
            for tap in self.taps.values():
                tap.close()

    def _quiet_min_delay_warning(self, dt: float) -> None:
        """Say once, not at every ``Run``, that ``dt`` is not a multiple of min_delay."""
        min_delay = self.nest.min_delay
        ratio = dt / min_delay
        if abs(ratio - round(ratio)) < 1e-9 or \
                self.nest.verbosity >= self.nest.VerbosityLevel.ERROR:
            return
        logger.warning(
            "engine %s: the step of %g ms is not a multiple of NEST's min_delay of %g ms. NEST "
            "warns that repeated runs may then differ from one Simulate when the network has "
            "more than one source of randomness; it would repeat that at every step, so NEST's "
            "verbosity is ERROR while running", self.name, dt, min_delay)
        self.nest.verbosity = self.nest.VerbosityLevel.ERROR

    # -- datapacks -----------------------------------------------------------------

    def get_datapack(self, name: str) -> dict[str, Any]:
        """The spikes population ``name`` emitted during the last step.

        The first read attaches a tap (a spike recorder of the engine's own) to the
        population, so counts start from there.

        Raises:
            KernelError: no such node, or not a neuron population.
        """
        tap = self.taps.get(name) or self._attach_tap(name)
        return {"count": tap.count, "rate": tap.rate(self._dt)}

    def _attach_tap(self, name: str) -> SpikeTap:
        population = self.nodes.get(name)
        if population is None:
            return super().get_datapack(name)
        kinds = set(_values(population.get("element_type"))) if len(population) else set()
        if kinds != {"neuron"}:
            raise KernelError(f"engine {self.name!r}: {name!r} is not a neuron population "
                              f"({', '.join(sorted(kinds)) or 'empty'}); spike datapacks come "
                              "from populations", self.name)
        self._leave_run()
        label = f"simserver-tap-{os.getpid()}-{self.name}-{name}"
        tap = self.taps[name] = SpikeTap(self.nest, population, label)
        logger.info("engine %s: spike datapack %r taps %d neurons", self.name, name, tap.size)
        return tap

    def set_datapack(self, name: str, value: Any) -> None:
        """Set parameters of node ``name`` for the next step, e.g. ``{"rate": 80.0}``.

        Raises:
            KernelError: no such node, not a dict, or NEST refuses the parameters.
        """
        nodes = self.nodes.get(name)
        if nodes is None:
            super().set_datapack(name, value)
        if not isinstance(value, Mapping):
            raise KernelError(f"engine {self.name!r}: datapack {name!r} takes a dict of "
                              f"parameters such as {{'rate': 80.0}}, not {value!r}", self.name)
        self._leave_run()
        try:
            nodes.set(dict(value))
        except self._nest_error as exc:
            raise self._error(f"cannot set {name!r} to {dict(value)}", exc) from exc

    # -- the end ---------------------------------------------------------------------

    def finalize(self, results_dir: Path) -> None:
        """``Cleanup``, then save every spike recorder's events (the raster is drawn by
        :meth:`draw`, once the end is reported)."""
        try:
            self._leave_run()
        except KernelError:
            # The recorders still hold what was simulated: save it all the same.
            logger.exception("engine %s: saving the spikes after a failed Cleanup", self.name)
        t_end = self.nest.biological_time  # a kernel status read (~0.3 ms): once here
        spikes = self._recorded_spikes(t_end)
        if not spikes:
            logger.info("engine %s: no spike_recorder in its nodes, no spikes saved", self.name)
            return
        path = save_spikes(spikes, results_dir)
        logger.info("saved: %s (%s) up to t = %g ms", path.name, ", ".join(
            f"{name} {len(times)} spikes" for name, (times, _) in spikes.items()), t_end)
        self._saved = (spikes, t_end)

    def draw(self, results_dir: Path) -> None:
        """Draw the spikes :meth:`finalize` saved to ``raster.png``."""
        if self._saved is None:
            return
        spikes, t_end = self._saved
        plot_raster(spikes, results_dir / RASTER_FILE, t_end,
                    f"engine {self.name}: spikes up to t = {t_end:g} ms")

    def spikes(self, recorder: str) -> Spikes:
        """The spikes spike recorder ``recorder`` of ``nodes`` holds: (times, sender ids),
        sorted by time, then sender, as ``spikes.npz`` has them.

        Reading a recorder converts all its events (~5 ms for 50,000 spikes); a read is
        kept until the simulated time moves on, so a script counting its spikes at the
        end and the engine's own save at the end read them once.

        Raises:
            KernelError: ``recorder`` is not a spike recorder of ``nodes`` that records
                to memory.
        """
        record_to = self._spike_recorders().get(recorder)
        if record_to != {"memory"}:
            what = "not a spike recorder" if record_to is None else \
                f"a spike recorder writing to {', '.join(sorted(record_to))}, not to memory"
            raise KernelError(f"engine {self.name!r}: {recorder!r} is {what}", self.name)
        return self._spikes_at(recorder, self.nest.biological_time)

    def _spikes_at(self, recorder: str, now: float) -> Spikes:
        """:meth:`spikes` of a recorder to memory, the simulated time being ``now``."""
        read = self._spikes_read.get(recorder)
        if read is None or read[0] != now:
            events = list(_values(self.nodes[recorder].get("events")))
            read = self._spikes_read[recorder] = (now, sorted_spikes(events))
        return read[1]

    def _recorded_spikes(self, now: float) -> dict[str, Spikes]:
        """The events of every spike recorder in ``nodes`` that records to memory, the
        simulated time being ``now``."""
        spikes = {}
        for name, record_to in self._spike_recorders().items():
            if record_to != {"memory"}:
                logger.info("engine %s: %s records to files of its own, not to spikes.npz",
                            self.name, name)
                continue
            spikes[name] = self._spikes_at(name, now)
        return spikes

    def _spike_recorders(self) -> dict[str, set[str]]:
        """Which of ``nodes`` are spike recorders, and where each records to. Found
        before the first step: every status read of a recorder converts all its events
        (ms for a run's worth), and of a population, every neuron's status."""
        if self._recorders is None:
            self._recorders = {}
            for name, nodes in self.nodes.items():
                if not len(nodes) or nodes[0].get("model") != "spike_recorder":
                    continue  # the first node rules out a population of neurons
                status = nodes.get(["model", "record_to"])
                if set(_values(status["model"])) == {"spike_recorder"}:
                    self._recorders[name] = set(_values(status["record_to"]))
        return self._recorders

    def shutdown(self) -> None:
        try:
            self._leave_run()
        finally:
            for tap in self.taps.values():
                tap.close()
            self._release_kernel()

    def version(self) -> str | None:
        return self.nest.__version__ if self.nest is not None else None


def _values(value: Any) -> tuple:
    """``NodeCollection.get(key)`` gives a bare value for one node, a tuple for several."""
    return value if isinstance(value, tuple) else (value,)
