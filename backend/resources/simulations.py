"""``/v1/simulations`` and a simulation's record, state and status."""
from __future__ import annotations

from typing import Any

from flask import request
from flask_restful import Resource

from dataclasses import replace

from backend import access, schemas
from backend.auth import caller
from backend.exceptions import Forbidden, InvalidRequest
from backend.paging import page
from backend.resources import json_body, page_args, seconds_arg, state_arg
from backend.services import Services
from lifecycle import SimState


class SimulationList(Resource):
    def __init__(self, services: Services) -> None:
        self.manager = services.manager
        self.max_wait = services.config.max_wait

    def get(self) -> dict[str, Any]:
        identity = caller()
        # Read before the listing: following /v1/events from it misses nothing after it.
        last_event_id = self.manager.last_event_id()
        wanted = request.args.get("owner")
        if access.sees_all(identity):
            owner = wanted
        elif wanted not in (None, identity.name):
            owner = None  # someone else's: nothing a scientist may see
        else:
            owner = identity.name
        records = self.manager.list(state=state_arg("state"),
                                    experiment=request.args.get("experiment"), owner=owner)
        if owner is None and not access.sees_all(identity):
            records = []
        found, cursor = page(records, lambda r: (r["created_at"], r["id"]), *page_args())
        return {"simulations": found, "next_cursor": cursor,
                "last_event_id": str(last_event_id)}

    def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        wait = seconds_arg("wait", self.max_wait)
        new = schemas.new_simulation(json_body())
        if wait is not None and new.state != SimState.STARTED:
            raise InvalidRequest("'?wait' needs \"state\": \"started\" in the body",
                                 code="invalid_argument")
        identity = caller()
        record = self.manager.create(owned(new, identity), identity, identity.name)
        if wait is not None:
            record = self.manager.wait_ended(record["id"], wait)
        return record, 201, {"Location": f"/v1/simulations/{record['id']}"}


def owned(new: schemas.NewSimulation, identity: access.Identity) -> schemas.NewSimulation:
    """``new`` owned by its caller; only an admin may name another owner.

    Raises:
        Forbidden: a non-admin names someone else.
    """
    if new.owner is not None and new.owner != identity.name and identity.role != "admin":
        raise Forbidden("only an admin may create a simulation for another owner")
    if identity.kind == "none":  # no authentication: the owner is whatever the body says
        return new
    return replace(new, owner=new.owner or identity.name)


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
        return {"state": self.manager.set_state(sim_id, target, caller().name).value}


class SimulationStatus(Resource):
    def __init__(self, services: Services) -> None:
        self.manager = services.manager

    def get(self, sim_id: str) -> dict[str, Any]:
        return self.manager.get(sim_id).status()
