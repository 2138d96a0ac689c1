"""CORS: which browser origins may read the answers (``*`` wildcards in origins)."""
from __future__ import annotations

import fnmatch

from flask import Response, request

#: Request headers a browser may send to ``/v1`` (the token, a body, a stream's position).
V1_HEADERS = "Authorization, Content-Type, Last-Event-ID"


def allowed(origin: str | None, origins: str) -> bool:
    return bool(origin) and any(fnmatch.fnmatchcase(origin, p.strip())
                                for p in origins.split(",") if p.strip())


def with_cors(response: Response, origins: str, methods: str,
              headers: str | None = None) -> Response:
    """Let browsers of the allowed origins read the answer; answer a preflight
    (``OPTIONS``) with ``methods`` and ``headers`` (default: what it asked for)."""
    origin = request.headers.get("Origin")
    if not allowed(origin, origins):
        return response
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers.add("Vary", "Origin")
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = methods
        asked = headers or request.headers.get("Access-Control-Request-Headers")
        if asked:
            response.headers["Access-Control-Allow-Headers"] = asked
        response.headers["Access-Control-Max-Age"] = "600"
    return response
