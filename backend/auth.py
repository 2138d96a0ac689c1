"""Authentication, authorization and the audit, applied to every request of the app.

Before a request: who is it (an API key or a JWT in ``Authorization: Bearer``; 401
without one), may its role call this route (:data:`backend.access.RULES`; 403), and
for a scientist, is the simulation it names theirs (404 if not: its existence is not
revealed) or the experiment it replaces theirs (403). After it: every mutating ``/v1``
request is appended to the audit, whatever its outcome. ``/health``, ``/ready`` and
``/openapi.json`` are open; a preflight (``OPTIONS``) carries no token and does nothing.

Tokens never reach a log, a record, an error or the audit.
"""
from __future__ import annotations

import ipaddress
import logging
import sqlite3
import threading
import time
from typing import Any

from flask import Flask, Response, g, request

from backend import access, cors
from backend.access import ANONYMOUS_ADMIN, Identity, Verdict
from backend.archive import validate_name
from backend.audit import AuditEntry
from backend.exceptions import (
    BackendError, ExperimentNotFound, Forbidden, SimulationNotFound, TooManyFailures,
    Unauthenticated,
)
from backend.keys import PREFIX, KeyStore
from backend.services import Services
from backend.tokens import JwtVerifier

logger = logging.getLogger(__name__)

#: Routes anyone may call: liveness, readiness, the API's description.
PUBLIC = frozenset({"/health", "/ready", "/openapi.json",
                    # the dashboard's static files: no data, and the sign-in page itself
                    "/ui", "/ui/", "/ui/<file>"})
MUTATING = frozenset({"POST", "PUT", "DELETE", "PATCH"})
#: The identity an audit entry names for a request that did not authenticate.
UNAUTHENTICATED = Identity("unauthenticated", "none", "none")
#: Longest path or target an audit entry keeps (URLs may be 64 kB long).
_MAX_AUDIT_TEXT = 512
#: Client addresses the failure limiter remembers at most (the fullest buckets go first).
_MAX_CLIENTS = 10_000


class FailureLimiter:
    """A token bucket of failed authentications per client address: ``burst`` at once,
    then ``rate`` per second. An empty bucket refuses every attempt from the address,
    right or wrong, so guessing learns nothing until it refills."""

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = burst
        self.rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)
        self._lock = threading.Lock()

    @staticmethod
    def bucket_of(client: str) -> str:
        """The bucket of an address: itself, or for IPv6 its /64 (one host's share)."""
        if ":" not in client:
            return client
        try:
            return str(ipaddress.ip_network(f"{client}/64", strict=False))
        except ValueError:
            return client

    def _tokens(self, client: str, now: float) -> float:
        tokens, then = self._buckets.get(client, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.rate)

    def blocked(self, client: str) -> bool:
        client = self.bucket_of(client)
        if client not in self._buckets:  # the common case: no failure, no lock
            return False
        with self._lock:
            return self._tokens(client, time.monotonic()) < 1

    def failed(self, client: str) -> None:
        client, now = self.bucket_of(client), time.monotonic()
        with self._lock:
            if len(self._buckets) >= _MAX_CLIENTS:
                self._forget_full(now)
            self._buckets[client] = (self._tokens(client, now) - 1, now)

    def _forget_full(self, now: float) -> None:
        for client in [c for c in self._buckets if self._tokens(c, now) >= self.burst]:
            del self._buckets[client]
        if len(self._buckets) >= _MAX_CLIENTS:
            self._buckets.clear()


class Authenticator:
    """Turns a request's ``Authorization`` header into an :class:`Identity`."""

    def __init__(self, keys: KeyStore, jwt: JwtVerifier | None,
                 limiter: FailureLimiter) -> None:
        self.keys = keys
        self.jwt = jwt
        self.limiter = limiter

    def identify(self, token: str | None, client: str, mutating: bool = False) -> Identity:
        """Who ``token`` is. A wrong token counts against ``client``'s failure budget,
        and so does a missing one on a ``mutating`` request (each is audited: a flood
        of them must not fill the disk).

        Raises:
            Unauthenticated: no token, or not a valid one; TooManyFailures: ``client``
            failed too often lately.
        """
        if self.limiter.blocked(client):
            logger.warning("authentication refused: %s failed too often", client)
            raise TooManyFailures("too many failed authentications from this address; "
                                  "try again later")
        if not token:
            if mutating:
                self.limiter.failed(client)
            raise Unauthenticated("this route needs 'Authorization: Bearer <API key or JWT>'")
        identity = self.keys.verify(token) if token.startswith(PREFIX) else \
            self.jwt.verify(token) if self.jwt is not None else None
        if identity is None:
            self.limiter.failed(client)
            logger.warning("authentication failed: %s from %s",
                           "an API key" if token.startswith(PREFIX) else "a bearer token",
                           client)
            raise Unauthenticated("the token is not valid: unknown, malformed, expired or "
                                  "revoked")
        return identity


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    scheme, _, token = (header or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def caller() -> Identity:
    """The identity of the current request (set before it ran; a request that was not
    authenticated is nobody, with no role)."""
    return g.get("identity", UNAUTHENTICATED)


def install(app: Flask, services: Services) -> None:
    """Authenticate, authorize, audit and answer CORS for every request of ``app``."""
    app.before_request(lambda: _before(services))
    app.after_request(lambda response: _after(services, response))
    services.event_visibility = lambda: _visibility(caller())


def _visibility(identity: Identity) -> Any:
    return lambda record: access.may_see(identity, record)


def _before(services: Services) -> None:
    if request.method == "OPTIONS" or request.url_rule is None or \
            request.url_rule.rule in PUBLIC:
        return
    auth = services.auth
    g.identity = UNAUTHENTICATED
    if auth is None:
        g.identity = ANONYMOUS_ADMIN
        return
    token = bearer(request.headers.get("Authorization"))
    try:
        g.identity = auth.identify(token, request.remote_addr or "",
                                   request.method in MUTATING)
    except TooManyFailures:
        g.skip_audit = True  # a flood is logged (once a request), not audited
        raise
    authorize(services, g.identity, request.url_rule.rule, request.method,
              request.view_args or {})


def authorize(services: Services, identity: Identity, route: str, method: str,
              args: dict[str, Any]) -> None:
    """Raises:
        Forbidden: the role may not; SimulationNotFound: a scientist names a
        simulation that is not theirs.
    """
    method = "GET" if method == "HEAD" else method
    verdict = access.verdict(identity, route, method)
    if verdict is Verdict.REFUSED:
        raise Forbidden(f"the role {identity.role!r} may not {method} {route}")
    if verdict is Verdict.IF_OWNER and "sim_id" in args:
        sup = services.manager.find(args["sim_id"])
        if sup is not None and sup.snapshot.get("owner") != identity.name:
            raise SimulationNotFound(f"no simulation with id {args['sim_id']!r}")
    if route.startswith("/v1/experiments/") and method in MUTATING:
        _check_experiment_owner(services, identity, args.get("name", ""))


def _check_experiment_owner(services: Services, identity: Identity, name: str) -> None:
    try:
        owner = services.experiments.owner(validate_name(name))
    except (ExperimentNotFound, BackendError):
        return  # a new experiment, or a bad name the resource will refuse
    if not access.may_replace_experiment(identity, owner):
        raise Forbidden(f"experiment {name!r} belongs to {owner or 'the backend'}: only "
                        "its owner or an admin may replace or delete it")


def _after(services: Services, response: Response) -> Response:
    if request.path.startswith("/v1/") and services.config.cors_origins and \
            "Access-Control-Allow-Origin" not in response.headers:
        cors.with_cors(response, services.config.cors_origins,
                       response.headers.get("Allow", ""), cors.V1_HEADERS)
        response.headers["Access-Control-Expose-Headers"] = "Location, WWW-Authenticate"
    if request.method in MUTATING and request.path.startswith("/v1/") and \
            not g.get("skip_audit"):
        _audit(services, response)
    return response


def _audit(services: Services, response: Response) -> None:
    identity = g.get("identity", UNAUTHENTICATED)
    args = request.view_args or {}
    target = args.get("sim_id") or args.get("name")
    if target is None and response.status_code == 201 and "Location" in response.headers:
        target = response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    try:
        services.audit.append(AuditEntry(
            identity=identity.name, role=identity.role, method=request.method,
            path=request.path[:_MAX_AUDIT_TEXT], target=target and target[:_MAX_AUDIT_TEXT],
            status=response.status_code,
            client=request.remote_addr or ""))
    except sqlite3.Error:
        logger.exception("audit: could not record %s %s by %s", request.method,
                         request.path, identity.name)
