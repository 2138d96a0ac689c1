"""The world: a two-wheeled vehicle with two light sensors, and a light.

A python engine (``world.py:World``). Datapacks: ``sensors`` gives the two readings
(left, right) in [0, 1]; ``wheels`` takes the two motor rates (left, right) in Hz,
which set the wheel speeds. ``save_results`` writes ``trajectory.npz`` and
``trajectory.png`` when the run ends.
"""
import math

import numpy as np


class World:
    def initialize(self, params):
        self.light = np.array(params.get("light", [2.0, 1.5]), dtype=float)
        self.position = np.array(params.get("start", [0.0, 0.0]), dtype=float)
        self.heading = float(params.get("heading", 0.0))        # rad, 0 = +x
        self.axle = float(params.get("axle", 0.2))               # m between the wheels
        self.speed_per_hz = float(params.get("speed_per_hz", 0.004))  # m/s per spike/s
        self.sensor_angle = float(params.get("sensor_angle", 0.7))     # rad off the heading
        self.falloff = float(params.get("falloff", 1.0))         # m: intensity halves here
        self.wheel_rates = (0.0, 0.0)
        self.path = [(0.0, *self.position, self.heading)]

    def distance(self):
        return float(np.linalg.norm(self.light - self.position))

    def reading(self, side):
        """Light falling on a sensor that looks ``sensor_angle`` to one side."""
        to_light = self.light - self.position
        bearing = math.atan2(to_light[1], to_light[0]) - self.heading
        facing = math.cos(bearing - side * self.sensor_angle)
        return max(0.0, facing) / (1.0 + (self.distance() / self.falloff) ** 2)

    def step(self, t, dt):
        h = dt / 1000.0
        left, right = (rate * self.speed_per_hz for rate in self.wheel_rates)
        speed, turn = (left + right) / 2.0, (right - left) / self.axle
        self.heading += turn * h
        self.position += speed * h * np.array([math.cos(self.heading), math.sin(self.heading)])
        self.path.append((t + dt, *self.position, self.heading))

    def get_datapack(self, name):
        if name == "sensors":
            return self.reading(+1), self.reading(-1)      # left looks left (+angle)
        if name == "distance":
            return self.distance()
        raise KeyError(name)

    def set_datapack(self, name, value):
        if name != "wheels":
            raise KeyError(name)
        self.wheel_rates = tuple(float(v) for v in value)

    def save_results(self, results_dir):
        path = np.array(self.path)
        np.savez(results_dir / "trajectory.npz", t=path[:, 0], position=path[:, 1:3],
                 heading=path[:, 3], light=self.light)
        self.plot(path, results_dir / "trajectory.png")

    def plot(self, path, filename):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 6), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.plot(path[:, 1], path[:, 2], color="tab:blue", label="vehicle")
        ax.plot(*path[0, 1:3], "o", color="tab:blue", label="start")
        ax.plot(*self.light, "*", color="orange", markersize=18, label="light")
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.set_title(f"t = {path[-1, 0] / 1000:g} s, distance to the light "
                     f"{self.distance():.2f} m")
        ax.legend(loc="best")
        fig.savefig(filename, dpi=100)
