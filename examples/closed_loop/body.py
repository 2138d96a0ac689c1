"""A point mass in the plane, pushed by a force, slowed by friction."""
import numpy as np


class Body:
    def initialize(self, params):
        self.mass = float(params.get("mass", 1.0))
        self.friction = float(params.get("friction", 0.5))
        self.position = np.array(params.get("start", [0.0, 0.0]), dtype=float)
        self.velocity = np.zeros(2)
        self.force = np.zeros(2)

    def step(self, t, dt):
        h = dt / 1000.0
        accel = (self.force - self.friction * self.velocity) / self.mass
        self.velocity += accel * h
        self.position += self.velocity * h

    def get_datapack(self, name):
        if name == "position":
            return self.position.copy()
        raise KeyError(name)

    def set_datapack(self, name, value):
        if name != "force":
            raise KeyError(name)
        self.force = np.asarray(value, dtype=float)
