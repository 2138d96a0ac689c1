"""``/v1/simulations`` and a simulation's record, state and status."""
from __future__ import annotations

from typing import Any

from flask import request
from flask_restful import Resource

from backend.manager import SimulationManager
from backend.resources import json_body


class SimulationList(Resource):
    def __init__(self, services: Any) -> None:
        self.manager: SimulationManager = services.manager

    def get(self) -> dict[str, Any]:
        return {"simulations": self.manager.list(state=request.args.get("state"),
                                                 experiment=request.args.get("experiment"))}

    def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        record = self.manager.create(json_body())
        return record.to_dict(), 201, {"Location": f"/v1/simulations/{record.id}"}


class Simulation(Resource):
    def __init__(self, services: Any) -> None:
        self.manager: SimulationManager = services.manager

    def get(self, sim_id: str) -> dict[str, Any]:
        return self.manager.get(sim_id).record.to_dict()

    def delete(self, sim_id: str) -> tuple[str, int]:
        self.manager.delete(sim_id)
        return "", 204


class SimulationState(Resource):
    def __init__(self, services: Any) -> None:
        self.manager: SimulationManager = services.manager

    def get(self, sim_id: str) -> dict[str, Any]:
        return {"state": self.manager.get(sim_id).record.state}

    def put(self, sim_id: str) -> dict[str, Any]:
        body = json_body()
        target = body.get("state") if isinstance(body, dict) else None
        return {"state": self.manager.set_state(sim_id, target).value}


class SimulationStatus(Resource):
    def __init__(self, services: Any) -> None:
        self.manager: SimulationManager = services.manager

    def get(self, sim_id: str) -> dict[str, Any]:
        return self.manager.get(sim_id).status()
