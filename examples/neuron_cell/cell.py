"""A single-compartment soma with Hodgkin-Huxley channels, driven by a current step.

The single-cell run of a NEURON web front end: about twenty numbers in, a voltage trace
out. ``build(h, params)`` is called by the neuron engine with ``stdrun.hoc`` loaded and
``h.dt`` set; every parameter is optional (defaults in :data:`DEFAULTS`):

- geometry and passive cable: ``diam`` (µm), ``L`` (µm), ``nseg``, ``cm`` (µF/cm²),
  ``Ra`` (Ω·cm);
- the ``hh`` mechanism: ``gnabar``, ``gkbar``, ``gl`` (S/cm²), ``el``, ``ena``, ``ek``
  (mV), and the temperature ``celsius`` (°C) its rates depend on;
- the current clamp at the middle of the soma: ``delay`` (ms), ``dur`` (ms), ``amp`` (nA);
- read by the engine, not here: ``dt`` (ms, NEURON's time step) and ``v_init`` (mV).

The run's length is the experiment's ``timeout.sim_time`` (NEURON's ``tstop``).
"""

DEFAULTS = {
    "diam": 20.0, "L": 20.0, "nseg": 1, "cm": 1.0, "Ra": 100.0,
    "gnabar": 0.12, "gkbar": 0.036, "gl": 0.0003, "el": -54.3, "ena": 50.0, "ek": -77.0,
    "celsius": 6.3,
    "delay": 100.0, "dur": 300.0, "amp": 0.1,
}


def build(h, params):
    p = {**DEFAULTS, **{key: value for key, value in params.items() if key in DEFAULTS}}
    h.celsius = p["celsius"]
    soma = h.Section(name="soma")
    soma.diam, soma.L, soma.nseg = p["diam"], p["L"], int(p["nseg"])
    soma.cm, soma.Ra = p["cm"], p["Ra"]
    soma.insert("hh")
    for seg in soma:
        seg.hh.gnabar, seg.hh.gkbar, seg.hh.gl, seg.hh.el = (
            p["gnabar"], p["gkbar"], p["gl"], p["el"])
    soma.ena, soma.ek = p["ena"], p["ek"]

    stim = h.IClamp(soma(0.5))
    stim.delay, stim.dur, stim.amp = p["delay"], p["dur"], p["amp"]

    soma_v = h.Vector().record(soma(0.5)._ref_v)
    # The sections and the clamp are returned too: the engine keeps them alive for the
    # run, and datapacks can read and set them ("stim.amp", "soma.gnabar_hh").
    return {"soma_v": soma_v, "soma": soma, "stim": stim}
