"""``/v1/simulations`` and a simulation's record, state and status."""
from __future__ import annotations

from typing import Any

from flask import request
from flask_restful import Resource

from backend import schemas
from backend.resources import json_body, state_arg
from backend.services import Services


class SimulationList(Resource):
    def __init__(self, services: Services) -> None:
        self.manager = services.manager

    def get(self) -> dict[str, Any]:
        return {"simulations": self.manager.list(state=state_arg("state"),
                                                 experiment=request.args.get("experiment"))}

    def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        record = self.manager.create(schemas.new_simulation(json_body()))
        return record, 201, {"Location": f"/v1/simulations/{record['id']}"}


class Simulation(Resource):
    def __init__(self, services: Services) -> None:
        self.manager = services.manager

    def get(self, sim_id: str) -> dict[str, Any]:
        return self.manager.record(sim_id)

    def delete(self, sim_id: str) -> tuple[str, int]:
        self.manager.delete(sim_id)
        return "", 204


class SimulationState(Resource):
    def __init__(self, services: Services) -> None:
        self.manager = services.manager

    def get(self, sim_id: str) -> dict[str, Any]:
        return {"state": self.manager.get(sim_id).state.value}

    def put(self, sim_id: str) -> dict[str, Any]:
        self.manager.get(sim_id)  # 404 before 400: the id is checked first
        target = schemas.requested_state(json_body())
        return {"state": self.manager.set_state(sim_id, target).value}


class SimulationStatus(Resource):
    def __init__(self, services: Services) -> None:
        self.manager = services.manager

    def get(self, sim_id: str) -> dict[str, Any]:
        return self.manager.get(sim_id).status()
