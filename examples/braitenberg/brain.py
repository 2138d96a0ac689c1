"""The brain: Braitenberg's vehicle 2b ("aggression") as a spiking network.

Two Poisson generators stand for the light sensors; each excites the motor population
of the *opposite* wheel, so the wheel away from the light turns faster and the vehicle
turns towards it, speeding up as it gets closer.
"""


def build(nest, params):
    size = int(params.get("motor_neurons", 20))
    weight = float(params.get("weight", 30.0))        # pA per input spike
    neuron = {"I_e": float(params.get("bias_current", 200.0))}   # a slow baseline
    sensor_left = nest.Create("poisson_generator")
    sensor_right = nest.Create("poisson_generator")
    motor_left = nest.Create("iaf_psc_alpha", size, params=neuron)
    motor_right = nest.Create("iaf_psc_alpha", size, params=neuron)
    nest.Connect(sensor_left, motor_right, syn_spec={"weight": weight})   # crossed
    nest.Connect(sensor_right, motor_left, syn_spec={"weight": weight})
    left_spikes = nest.Create("spike_recorder")
    right_spikes = nest.Create("spike_recorder")
    nest.Connect(motor_left, left_spikes)
    nest.Connect(motor_right, right_spikes)
    return {"sensor_left": sensor_left, "sensor_right": sensor_right,
            "motor_left": motor_left, "motor_right": motor_right,
            "motor_left_spikes": left_spikes, "motor_right_spikes": right_spikes}
