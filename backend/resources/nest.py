"""``/v1/simulations/<id>/nest/...``: the NEST Server API of a NEST session.

``GET /``, ``GET /api``, ``GET|POST /api/<call>``, ``GET|POST /exec``, as NEST Server
3.10 answers them (``nest-client`` pointed at ``.../nest`` works unchanged). Requests
and answers pass through byte for byte; the session's simulation server parses and
answers them (see ``simserver.nest_api``).
"""
from __future__ import annotations

from flask import Response, request
from flask_restful import Resource

from backend import cors
from backend.exceptions import RequestTooLarge
from backend.nest_gateway import NestGateway, NestRequest
from backend.services import Services

#: The largest body the session's server takes (scripts, long node lists).
MAX_BODY = 16 * 1024 * 1024
METHODS = "GET, POST, OPTIONS"


def nest_request(path: str) -> NestRequest:
    """The current request as the session's server should get it.

    Raises:
        RequestTooLarge: the body is over :data:`MAX_BODY`.
    """
    if (request.content_length or 0) > MAX_BODY:
        raise RequestTooLarge(f"a NEST API request may have at most {MAX_BODY} bytes")
    return NestRequest(method=request.method, path=path,
                       query=request.query_string.decode("latin-1"),
                       body=request.get_data(cache=False),
                       content_type=request.headers.get("Content-Type"))


def passthrough(status: int, content_type: str, body: bytes) -> Response:
    return Response(body, status=status, content_type=content_type or "application/json")


def with_cors(response: Response, origins: str) -> Response:
    """Let browsers of the allowed origins read the answer (NEST Desktop, scripts in a
    page), as NEST Server's flask-cors does."""
    return cors.with_cors(response, origins, METHODS)


def preflight(origins: str) -> Response:
    response = Response(b"", status=200, headers={"Allow": METHODS})
    return with_cors(response, origins)


class NestApi(Resource):
    """Every route below ``/v1/simulations/<id>/nest``."""

    def __init__(self, services: Services) -> None:
        self.gateway: NestGateway = services.nest
        self.origins = services.config.nest_cors_origins

    def get(self, sim_id: str, rest: str = "") -> Response:
        answer = self.gateway.call(sim_id, nest_request("/" + rest))
        return with_cors(passthrough(answer.status, answer.content_type, answer.body),
                         self.origins)

    post = get

    def options(self, sim_id: str, rest: str = "") -> Response:
        return preflight(self.origins)
