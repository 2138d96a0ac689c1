"""A damped harmonic oscillator: x'' = -w^2 x - 2 zeta w x'."""
import math


class Oscillator:
    def initialize(self, params):
        self.omega = 2 * math.pi * float(params.get("frequency_hz", 0.5))
        self.zeta = float(params.get("damping", 0.1))
        self.x = float(params.get("x0", 1.0))
        self.v = 0.0

    def step(self, t, dt):
        h = dt / 1000.0  # ms -> s
        # semi-implicit Euler: stable for oscillators
        self.v += (-self.omega ** 2 * self.x - 2 * self.zeta * self.omega * self.v) * h
        self.x += self.v * h

    def get_datapack(self, name):
        return {"x": self.x, "v": self.v}[name]
