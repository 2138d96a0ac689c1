"""Drop-in NEST Server: the NEST Server API at the root of a port, one session per key.

For clients that cannot take a path prefix (NEST Desktop, scripts written for
``http://localhost:52425``): ``simbackend nest-server`` serves ``/``, ``/api``,
``/api/<call>`` and ``/exec`` on a port of their own (52425 by default). Each caller is
told apart by :func:`token_identity` (the token it presents, as ``Authorization:
Bearer <key>`` or NEST Server's ``NESTServerAuth: <key>``) and gets its own NEST
session, created on its first request and started at once; when that session has
ended (stopped, idle) the next request starts a new one. The sessions are ordinary
simulations: listed, paused, stopped and reviewed over ``/v1``.

Who a request is comes from one pluggable function. With authentication on (the
default) it is the name of the API key or JWT the request presents (refused as on
``/v1``: 401, 429; 403 for roles that may not run NEST code), and that name owns the
session; with ``--no-auth``, the hash of whatever token it presents.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response

from backend import errors
from backend.auth import bearer
from backend.exceptions import Forbidden, SessionNotLive, SimulationNotFound
from backend.resources.nest import nest_request, passthrough, preflight, with_cors
from backend.schemas import NewSimulation
from backend.services import Services
from lifecycle import SimState

logger = logging.getLogger(__name__)

#: The identity of a request without a token (one shared session until auth lands).
ANONYMOUS = "anonymous"
#: Hex digits of a token's sha256 kept as its identity (and in its session's record).
_DIGEST_CHARS = 32
#: Roles that may have a drop-in session (run NEST code).
NEST_ROLES = ("admin", "scientist")
#: Retries when the session of a caller ended between finding it and calling it.
_RETRIES = 2

#: ``identify(headers) -> identity``: who a request is; raises to refuse it.
Identify = Callable[[Mapping[str, str]], str]


def token_identity(headers: Mapping[str, str]) -> str:
    """The sha256 (hex prefix) of the token a request presents, or :data:`ANONYMOUS`.

    Never the token itself: the identity is kept in the session's record.
    """
    scheme, _, bearer = headers.get("Authorization", "").partition(" ")
    token = bearer.strip() if scheme.lower() == "bearer" else headers.get("NESTServerAuth", "")
    if not token:
        return ANONYMOUS
    return hashlib.sha256(token.encode()).hexdigest()[:_DIGEST_CHARS]


class DropInSessions:
    """Which NEST session serves which identity; creates one on first use."""

    def __init__(self, services: Services, identify: Identify = token_identity,
                 owned: bool = False) -> None:
        self.manager = services.manager
        #: The identity is a user's name, who owns the session (authentication is on).
        self.owned = owned
        self.gateway = services.nest
        self.identify = identify
        self._sessions: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def session_for(self, identity: str) -> str:
        """The id of ``identity``'s live session, created (and started) if it has none.

        Raises:
            ExceedsHost: the session could never fit the host.
        """
        with self._lock:
            lock = self._locks.setdefault(identity, threading.Lock())
        with lock:  # one creation per identity, however many requests race for it
            sim_id = self._sessions.get(identity) or self._find(identity)
            if sim_id is not None and self._live(sim_id):
                return sim_id
            record = self.manager.create(NewSimulation(
                experiment=None, kernel="nest", nest={"drop_in": identity},
                state=SimState.STARTED, owner=identity if self.owned else None),
                requested_by=identity if self.owned else None)
            logger.info("drop-in: NEST session %s for %s", record["id"],
                        identity if identity == ANONYMOUS else f"key {identity[:8]}...")
            self._sessions[identity] = record["id"]
            return record["id"]

    def _find(self, identity: str) -> str | None:
        """A live session of ``identity`` from before a restart of the backend."""
        for record in self.manager.list():
            if (record.get("nest") or {}).get("drop_in") == identity and \
                    not SimState(record["state"]).is_terminal:
                return record["id"]
        return None

    def _live(self, sim_id: str) -> bool:
        try:
            return not self.manager.get(sim_id).state.is_terminal
        except SimulationNotFound:
            return False

    def answer(self, headers: Mapping[str, str], path: str) -> Any:
        """Forward the current request to its caller's session; the answer unchanged."""
        identity = self.identify(headers)
        request = nest_request(path)
        for attempt in range(_RETRIES + 1):
            sim_id = self.session_for(identity)
            try:
                return self.gateway.call(sim_id, request)
            except SessionNotLive:
                if attempt == _RETRIES:
                    raise
        raise AssertionError("unreachable")


def authenticated(services: Services) -> Identify:
    """Who a request is by the backend's authentication: the name of its key or JWT."""
    from flask import request

    def identify(headers: Mapping[str, str]) -> str:
        token = bearer(headers.get("Authorization")) or headers.get("NESTServerAuth") or None
        identity = services.auth.identify(token, request.remote_addr or "")
        if identity.role not in NEST_ROLES:
            raise Forbidden(f"the role {identity.role!r} may not run NEST sessions")
        return identity.name
    return identify


def create_dropin_app(services: Services, identify: Identify | None = None) -> Flask:
    """The WSGI application of the drop-in NEST Server (JSON errors like ``/v1``)."""
    from flask import request

    owned = identify is None and services.auth is not None
    if identify is None:
        identify = authenticated(services) if owned else token_identity
    sessions = DropInSessions(services, identify, owned)
    origins = services.config.nest_cors_origins
    app = Flask("simbackend-nest-server")
    app.url_map.merge_slashes = False
    app.extensions["simbackend"] = services
    app.extensions["simbackend-dropin"] = sessions

    @app.route("/", defaults={"rest": ""}, methods=["GET", "POST", "OPTIONS"])
    @app.route("/<path:rest>", methods=["GET", "POST", "OPTIONS"])
    def nest_api(rest: str) -> Response:
        if request.method == "OPTIONS":
            return preflight(origins)
        answer = sessions.answer(request.headers, "/" + rest)
        return with_cors(passthrough(answer.status, answer.content_type, answer.body),
                         origins)

    errors.register(app)
    return app
