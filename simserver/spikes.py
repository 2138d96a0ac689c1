"""Spikes of the nest engine: per-step counts while running, files when the run ends.

While running, a :class:`SpikeTap` counts a population's spikes step by step. When
the run ends, :func:`save_spikes` writes every spike recorder's events to
``spikes.npz`` and :func:`plot_raster` draws them to ``raster.png``. Nothing here
imports NEST: the engine hands in its node collections.
"""
from __future__ import annotations

import logging
import zipfile  # noqa: F401 - np.savez's: imported here, not at the run's end (~1.5 ms)
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

logger = logging.getLogger(__name__)

SPIKES_FILE = "spikes.npz"
RASTER_FILE = "raster.png"

#: (times in ms, sender node ids), sorted by time, then sender.
Spikes = tuple[np.ndarray, np.ndarray]


class SpikeTap:
    """Counts the spikes a population emitted during the last step, reading each spike once.

    NEST's in-memory recorders hand out all their events at every read and cannot be
    cleared between ``Prepare`` and ``Cleanup``. An ``ascii`` recorder's file, though,
    is flushed at the end of every ``Run``: reading what was appended since the last
    step costs only the new spikes. The tap is a recorder of its own, so the user's
    recorders stay as ``build`` made them.
    """

    def __init__(self, nest: Any, population: Any, label: str) -> None:
        self.size = len(population)
        self.recorder = nest.Create("spike_recorder",
                                    params={"record_to": "ascii", "label": label})
        nest.Connect(population, self.recorder)
        self.count = 0
        self._files: list[BinaryIO] = []
        self._paths: list[Path] = []

    def open(self) -> None:
        """Open the recorder's files; NEST creates them (with a header) in ``Prepare``."""
        # Absolute now: NEST names them relative to the working directory, which a
        # script may change before the tap removes them.
        self._paths = [Path(name).resolve() for name in self.recorder.get("filenames")]
        self._files = [open(path, "rb") for path in self._paths]
        for stream in self._files:
            while not stream.readline().startswith(b"sender"):  # the column header ends it
                pass

    def read(self) -> None:
        """Count the lines appended during the last step (one per spike)."""
        self.count = sum(stream.read().count(b"\n") for stream in self._files)

    def rate(self, dt: float | None) -> float:
        """Mean firing rate per neuron over the last step of ``dt`` ms, in Hz."""
        if not dt or not self.size:
            return 0.0
        return self.count / self.size / (dt / 1000.0)

    def close(self) -> None:
        for stream in self._files:
            stream.close()
        for path in self._paths:
            path.unlink(missing_ok=True)
        self._files, self._paths = [], []


def sorted_spikes(events: list[dict[str, Any]]) -> Spikes:
    """Merge recorder event dicts (one per recorder node) into time-sorted arrays.

    NEST's recording order depends on how the run was cut into ``Run`` calls and on
    threads; sorting by time, then sender, makes equal simulations give equal files.
    """
    times = _joined([np.asarray(e["times"], dtype=np.float64) for e in events], np.float64)
    senders = _joined([np.asarray(e["senders"], dtype=np.int64) for e in events], np.int64)
    if not len(times):
        return times, senders
    return _by_time_then_sender(times, senders)


def _joined(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
    """One array of ``arrays`` (itself when there is one: no copy)."""
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)


#: Times are keyed in µs: NEST's time base (1000 tics per ms by default), so any two
#: times on its grid, at any resolution, get different keys.
_KEY_PER_MS = 1000.0


def _by_time_then_sender(times: np.ndarray, senders: np.ndarray) -> Spikes:
    """``times`` and ``senders`` in the order of ``np.lexsort((senders, times))``, at a
    fraction of its cost.

    One stable sort of a single integer key, the time in µs, then the sender: integers
    compare faster than floats, and the key puts one time's senders in order without a
    second pass. Two times closer than a µs share a key (off NEST's grid, as precise
    spike times may be), which could put the later first: the order is checked to be by
    time, and lexsort decides where it is not, or where the key does not fit int64."""
    if not np.all(np.isfinite(times)):
        return _lexsorted(times, senders)
    ticks = np.rint(times * _KEY_PER_MS).astype(np.int64)
    first_tick, low = int(ticks.min()), int(senders.min())
    span = int(senders.max()) - low + 1
    if (int(ticks.max()) - first_tick + 1) * span >= 2 ** 62:
        return _lexsorted(times, senders)
    order = np.argsort((ticks - first_tick) * span + (senders - low), kind="stable")
    in_order = times[order]
    if np.any(in_order[1:] < in_order[:-1]):
        return _lexsorted(times, senders)
    return in_order, senders[order]


def _lexsorted(times: np.ndarray, senders: np.ndarray) -> Spikes:
    order = np.lexsort((senders, times))
    return times[order], senders[order]


def save_spikes(spikes: dict[str, Spikes], results_dir: Path) -> Path:
    """Write ``<name>_times`` (float64, ms) and ``<name>_senders`` (int64) to ``spikes.npz``."""
    arrays: dict[str, np.ndarray] = {}
    for name, (times, senders) in spikes.items():
        arrays[f"{name}_times"] = times
        arrays[f"{name}_senders"] = senders
    path = results_dir / SPIKES_FILE
    np.savez(path, **arrays)
    return path


def plot_raster(spikes: dict[str, Spikes], path: Path, t_end: float, title: str) -> None:
    """Draw one raster panel per recorder with matplotlib's Agg backend (no display)."""
    # Imported here: only runs that recorded spikes pay for matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 1.5 + 2 * len(spikes)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(spikes), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, (times, senders)) in zip(axes, spikes.items(), strict=True):
        ax.plot(times, senders, "|", markersize=3, color="black", rasterized=True)
        ax.set_ylabel(f"{name}\nsender id")
        ax.set_title(f"{name}: {len(times)} spikes", loc="left", fontsize="small")
    axes[-1].set_xlabel("time (ms)")
    axes[-1].set_xlim(0.0, max(t_end, 1e-3))
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    logger.info("saved: %s (%d panels)", path.name, len(spikes))
