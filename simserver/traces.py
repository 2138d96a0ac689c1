"""Traces of the neuron engine: recordings saved to ``<engine>.npz``, voltages plotted.

A trace is a float64 array of samples, one per NEURON time step (or per the interval
the model recorded it at). Nothing here imports NEURON: the engine hands in arrays.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: The name of the time trace; the engine records it when the model does not.
TIME = "t"

#: Which traces are membrane potentials, by name: ``v``, ``soma_v``, ``dend_v`` ...
_VOLTAGE_NAME = re.compile(r"(?:^|_)v$")


def traces_file(engine: str) -> str:
    return f"{engine}.npz"


def plot_file(engine: str) -> str:
    return f"{engine}_v.png"


def voltage_names(traces: dict[str, np.ndarray]) -> list[str]:
    """The traces that are voltages by name and sampled as the time trace is."""
    times = traces.get(TIME)
    if times is None:
        return []
    return [name for name, values in traces.items()
            if _VOLTAGE_NAME.search(name) and len(values) == len(times)]


def save_traces(traces: dict[str, np.ndarray], path: Path) -> Path:
    """Write every trace under its name (float64) to the ``.npz`` file ``path``."""
    np.savez(path, **{name: np.asarray(values, dtype=np.float64)
                      for name, values in traces.items()})
    return path


def plot_voltages(traces: dict[str, np.ndarray], names: list[str], path: Path,
                  title: str) -> None:
    """Draw the voltage traces ``names`` against ``t`` with matplotlib's Agg backend."""
    # Imported here: only runs that end with voltage traces pay for matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    times = traces[TIME]
    for name in names:
        ax.plot(times, traces[name], linewidth=0.8, label=name)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("membrane potential (mV)")
    ax.set_xlim(0.0, max(float(times[-1]) if len(times) else 0.0, 1e-3))
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(title)
    fig.savefig(path, dpi=100)
    logger.info("saved: %s (%s)", path.name, ", ".join(names))
