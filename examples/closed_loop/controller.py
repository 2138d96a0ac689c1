"""A PD controller: force = kp * error - kd * (rate of the position)."""
import numpy as np


class Controller:
    def initialize(self, params):
        self.target = np.array(params.get("target", [3.0, -2.0]), dtype=float)
        self.kp = float(params.get("kp", 4.0))
        self.kd = float(params.get("kd", 3.0))
        self.position = None
        self.previous = None
        self.force = np.zeros(2)

    def step(self, t, dt):
        if self.position is None:
            return
        rate = np.zeros(2) if self.previous is None \
            else (self.position - self.previous) / (dt / 1000.0)
        self.force = self.kp * (self.target - self.position) - self.kd * rate
        self.previous = self.position

    def get_datapack(self, name):
        return {"force": self.force.copy(), "target": self.target.copy()}[name]

    def set_datapack(self, name, value):
        if name != "position":
            raise KeyError(name)
        self.position = np.asarray(value, dtype=float)
