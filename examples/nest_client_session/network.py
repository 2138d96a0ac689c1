"""The NEST Server documentation's client example, written once for both sides.

``run(nest, seed)`` takes either the PyNEST module itself or a ``nest_client.NESTClient``:
the client mirrors PyNEST, so the same lines build the same network (a Poisson
generator driving 1000 ``iaf_psc_alpha`` neurons, every tenth recorded), simulate one
second and count the recorded spikes.
"""
from __future__ import annotations

from typing import Any

DEFAULT_SEED = 2024


def run(nest: Any, seed: int = DEFAULT_SEED, t: float = 1000.0) -> int:
    """Build the network in a fresh kernel with ``seed``, simulate ``t`` ms, and return
    the spike recorder's ``n_events``."""
    sr = simulate(nest, seed, t)
    return nest.GetStatus(sr, "n_events")[0]


def simulate(nest: Any, seed: int = DEFAULT_SEED, t: float = 1000.0) -> Any:
    """Build the network in a fresh kernel with ``seed`` and simulate ``t`` ms; return the
    spike recorder. (NEST Server itself cannot answer the ``GetStatus`` of ``run``: it
    passes the recorder on as a list. Its ``/exec`` can.)"""
    nest.ResetKernel()
    nest.SetKernelStatus({"rng_seed": seed})
    pg = nest.Create("poisson_generator", 1, {"rate": 6500.})
    neurons = nest.Create("iaf_psc_alpha", 1000)
    sr = nest.Create("spike_recorder")
    nest.Connect(pg, neurons, syn_spec={"weight": 10.})
    nest.Connect(neurons[::10], sr)
    nest.Simulate(t)
    return sr
