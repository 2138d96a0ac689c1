"""Transceivers: the closed loop between the world and the brain, before every step."""
from simserver.script import transceiver

#: Poisson rate of a sensor (Hz) in the dark and in full light.
DARK_RATE, FULL_RATE = 2000.0, 12000.0


@transceiver
def see(engines, t):
    """Light readings set the rates of the two sensor Poisson generators."""
    left, right = engines["world"].get_datapack("sensors")
    brain = engines["brain"]
    brain.set_datapack("sensor_left", {"rate": DARK_RATE + (FULL_RATE - DARK_RATE) * left})
    brain.set_datapack("sensor_right", {"rate": DARK_RATE + (FULL_RATE - DARK_RATE) * right})


@transceiver
def drive(engines, t):
    """The motor populations' rates in the last step set the wheel speeds."""
    brain = engines["brain"]
    engines["world"].set_datapack("wheels", (brain.get_datapack("motor_left")["rate"],
                                             brain.get_datapack("motor_right")["rate"]))
