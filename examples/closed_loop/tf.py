"""Transceivers: run before every step, moving datapacks between the engines."""
from simserver.script import transceiver


@transceiver
def sense(engines, t):
    """The controller sees where the body is."""
    engines["controller"].set_datapack("position", engines["body"].get_datapack("position"))


@transceiver
def actuate(engines, t):
    """The body feels the controller's force."""
    engines["body"].set_datapack("force", engines["controller"].get_datapack("force"))
