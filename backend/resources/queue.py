"""``/v1/queue``: the queued runs in order, and operators moving or cancelling them."""
from __future__ import annotations

from typing import Any

from flask_restful import Resource

from backend import access, schemas
from backend.auth import caller
from backend.resources import json_body
from backend.services import Services


class Queue(Resource):
    def __init__(self, services: Services) -> None:
        self.manager = services.manager

    def get(self) -> dict[str, Any]:
        view, identity = self.manager.queue(), caller()
        if not access.sees_all(identity):  # a scientist sees their own runs
            for part in ("queue", "running"):
                view[part] = [e for e in view[part] if e.get("owner") == identity.name]
        return view


class QueueEntry(Resource):
    def __init__(self, services: Services) -> None:
        self.manager = services.manager

    def get(self, sim_id: str) -> dict[str, Any]:
        return self.manager.queue_entry(sim_id)

    def put(self, sim_id: str) -> dict[str, Any]:
        self.manager.get(sim_id)  # 404 before 400: the id is checked first
        change = schemas.queue_change(json_body())
        return self.manager.change_queued(sim_id, position=change.position,
                                          priority=change.priority, identity=caller())

    def delete(self, sim_id: str) -> tuple[str, int]:
        self.manager.cancel_queued(sim_id, caller().name)
        return "", 204
