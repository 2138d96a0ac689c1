"""Brunel (2000): a sparse balanced network of excitatory and inhibitory neurons.

``build(nest, params)`` is called by the nest engine after it reset NEST and applied the
seed, threads and resolution of ``experiment.json``. Parameters (all optional):

- ``n_neurons`` (1000): 80 % excitatory, 20 % inhibitory.
- ``regime`` ("AI"): the relative inhibition ``g`` and external drive ``eta`` (in units of
  the rate that brings a neuron to threshold) of one of the four states of Brunel's
  Fig. 8: "SR" synchronous regular, "AI" asynchronous irregular, "SI-fast" and
  "SI-slow" synchronous irregular. ``g`` and ``eta`` override it.
- ``epsilon`` (0.1): connection probability, as fixed in-degrees C_E, C_I.
- ``J`` (mV): EPSP amplitude; by default 100 mV / C_E, so that J·C_E is Brunel's
  0.1 mV × 1000 whatever the size.
- ``delay`` (1.5 ms), ``n_record`` (all): neurons recorded per population.
"""

REGIMES = {"SR": (3.0, 2.0), "AI": (5.0, 2.0), "SI-fast": (6.0, 4.0), "SI-slow": (4.5, 0.9)}

NEURON = {"C_m": 1.0, "tau_m": 20.0, "t_ref": 2.0, "E_L": 0.0, "V_reset": 10.0,
          "V_m": 0.0, "V_th": 20.0}


def build(nest, params):
    g, eta = REGIMES[params.get("regime", "AI")]
    g, eta = params.get("g", g), params.get("eta", eta)
    n = int(params.get("n_neurons", 1000))
    n_ex = int(0.8 * n)
    c_ex = max(1, int(params.get("epsilon", 0.1) * n_ex))
    c_in = max(1, int(params.get("epsilon", 0.1) * (n - n_ex)))
    weight = params.get("J", 100.0 / c_ex)
    delay = params.get("delay", 1.5)
    # The external rate that alone brings the mean input to threshold, times eta.
    nu_threshold = NEURON["V_th"] / (weight * c_ex * NEURON["tau_m"])
    external_rate = 1000.0 * eta * nu_threshold * c_ex

    # One model with the parameters, then plain Creates: NEST applies parameters given
    # to Create node by node (~20 ms for 1000 neurons), a model's defaults at once.
    nest.CopyModel("iaf_psc_delta", "brunel_neuron", NEURON)
    excitatory = nest.Create("brunel_neuron", n_ex)
    inhibitory = nest.Create("brunel_neuron", n - n_ex)
    neurons = excitatory + inhibitory
    noise = nest.Create("poisson_generator", params={"rate": external_rate})
    nest.Connect(noise, neurons, syn_spec={"weight": weight, "delay": delay})
    nest.Connect(excitatory, neurons, {"rule": "fixed_indegree", "indegree": c_ex},
                 {"weight": weight, "delay": delay})
    nest.Connect(inhibitory, neurons, {"rule": "fixed_indegree", "indegree": c_in},
                 {"weight": -g * weight, "delay": delay})

    n_record = params.get("n_record")
    ex_spikes = nest.Create("spike_recorder")
    in_spikes = nest.Create("spike_recorder")
    nest.Connect(excitatory[:n_record] if n_record else excitatory, ex_spikes)
    nest.Connect(inhibitory[:n_record] if n_record else inhibitory, in_spikes)
    return {"excitatory": excitatory, "inhibitory": inhibitory, "noise": noise,
            "ex_spikes": ex_spikes, "in_spikes": in_spikes}
