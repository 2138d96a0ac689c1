"""``/v1/whoami`` (who the caller is) and ``/v1/audit`` (what was changed, by whom)."""
from __future__ import annotations

from typing import Any

from flask import request
from flask_restful import Resource

from backend.audit import DEFAULT_LIMIT, AuditQuery
from backend.auth import caller
from backend.resources import int_arg
from backend.services import Services


class WhoAmI(Resource):
    def __init__(self, services: Services) -> None:
        self.services = services

    def get(self) -> dict[str, str]:
        return caller().to_dict()


class AuditList(Resource):
    def __init__(self, services: Services) -> None:
        self.audit = services.audit

    def get(self) -> dict[str, Any]:
        query = AuditQuery(identity=request.args.get("identity") or None,
                           target=request.args.get("target") or None,
                           method=request.args.get("method") or None,
                           status=int_arg("status"), since=request.args.get("since") or None,
                           limit=int_arg("limit", DEFAULT_LIMIT))
        return {"audit": self.audit.query(query)}
