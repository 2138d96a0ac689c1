"""Who may do what: the roles, the identity of a caller, and the rules of each route.

Stdlib only, no Flask: :mod:`backend.auth` applies these rules to requests, the matrix
test reads them, the README documents them. A rule names the least role a route needs
and whether the caller must own the simulation (or experiment) it names.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

#: The roles, most privileged first.
ROLES = ("admin", "operator", "scientist", "observer")


@dataclass(frozen=True)
class Identity:
    """Who a request is: a name (a key's or a token's user), a role, how it proved it."""

    name: str
    role: str
    #: ``api_key``, ``jwt`` or ``none`` (authentication is off).
    kind: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "role": self.role, "kind": self.kind}


#: The caller when authentication is off (``--no-auth``): may do everything.
ANONYMOUS_ADMIN = Identity("anonymous", "admin", "none")


class Need(Enum):
    """What a route asks of its caller."""

    #: Any role: read anything visible (a scientist sees their own simulations).
    READ = "read"
    #: Scientist or admin: upload experiments, create simulations (and NEST sessions).
    CREATE = "create"
    #: Operator or admin on any simulation; a scientist on their own.
    CONTROL = "control"
    #: Admin; a scientist on their own simulation (delete it, call its NEST kernel).
    OWN = "own"
    #: Operator or admin: the audit, moving others' queue entries.
    OPERATE = "operate"


#: ``(route, method) -> Need``; a route or method missing here is refused to all but
#: admins, so a new route is closed until it is given a rule.
RULES: dict[tuple[str, str], Need] = {
    ("/", "GET"): Need.READ,
    ("/v1/whoami", "GET"): Need.READ,
    ("/v1/experiments", "GET"): Need.READ,
    ("/v1/experiments/<path:name>", "GET"): Need.READ,
    ("/v1/experiments/<path:name>", "PUT"): Need.CREATE,
    ("/v1/experiments/<path:name>", "DELETE"): Need.CREATE,
    ("/v1/simulations", "GET"): Need.READ,
    ("/v1/simulations", "POST"): Need.CREATE,
    ("/v1/simulations/<sim_id>", "GET"): Need.READ,
    ("/v1/simulations/<sim_id>", "DELETE"): Need.OWN,
    ("/v1/simulations/<sim_id>/state", "GET"): Need.READ,
    ("/v1/simulations/<sim_id>/state", "PUT"): Need.CONTROL,
    ("/v1/simulations/<sim_id>/status", "GET"): Need.READ,
    ("/v1/simulations/<sim_id>/logs", "GET"): Need.READ,
    ("/v1/simulations/<sim_id>/logs/<path:name>", "GET"): Need.READ,
    ("/v1/simulations/<sim_id>/results", "GET"): Need.READ,
    ("/v1/simulations/<sim_id>/results/<path:name>", "GET"): Need.READ,
    ("/v1/simulations/<sim_id>/events", "GET"): Need.READ,
    ("/v1/events", "GET"): Need.READ,
    ("/v1/queue", "GET"): Need.READ,
    ("/v1/queue/<sim_id>", "GET"): Need.READ,
    ("/v1/queue/<sim_id>", "PUT"): Need.CONTROL,
    ("/v1/queue/<sim_id>", "DELETE"): Need.CONTROL,
    ("/v1/audit", "GET"): Need.OPERATE,
    **{(route, method): Need.OWN
       for route in ("/v1/simulations/<sim_id>/nest", "/v1/simulations/<sim_id>/nest/",
                     "/v1/simulations/<sim_id>/nest/<path:rest>")
       for method in ("GET", "POST")},
}

#: Which roles meet each need on any simulation, and which only on their own.
_ANY: dict[Need, frozenset[str]] = {
    Need.READ: frozenset({"admin", "operator", "observer"}),
    Need.CREATE: frozenset({"admin", "scientist"}),
    Need.CONTROL: frozenset({"admin", "operator"}),
    Need.OWN: frozenset({"admin"}),
    Need.OPERATE: frozenset({"admin", "operator"}),
}
_OWN_ONLY: dict[Need, frozenset[str]] = {
    Need.READ: frozenset({"scientist"}),
    Need.CONTROL: frozenset({"scientist"}),
    Need.OWN: frozenset({"scientist"}),
}


class Verdict(Enum):
    ALLOWED = "allowed"
    #: Allowed if the caller owns the simulation the route names (a route naming none,
    #: such as a listing, shows the caller's own).
    IF_OWNER = "if_owner"
    REFUSED = "refused"


def verdict(identity: Identity, route: str, method: str) -> Verdict:
    """May ``identity`` call ``method route`` (before looking at what it names)?"""
    need = RULES.get((route, method))
    if need is None:
        return Verdict.ALLOWED if identity.role == "admin" else Verdict.REFUSED
    if identity.role in _ANY[need]:
        return Verdict.ALLOWED
    if identity.role in _OWN_ONLY.get(need, ()):
        return Verdict.IF_OWNER
    return Verdict.REFUSED


def sees_all(identity: Identity) -> bool:
    """Does ``identity`` see every simulation (not only its own)?"""
    return identity.role in _ANY[Need.READ]


def may_see(identity: Identity, record: dict[str, Any]) -> bool:
    return sees_all(identity) or record.get("owner") == identity.name


def may_prioritise(identity: Any) -> bool:
    """Raise a run's priority, move queue entries: operators and admins (and everyone
    when there is no identity: a manager called outside a request)."""
    return not isinstance(identity, Identity) or identity.role in ("admin", "operator")


def may_replace_experiment(identity: Identity, owner: str | None) -> bool:
    """Replace or delete an experiment: its owner, or an admin."""
    return identity.role == "admin" or (owner is not None and owner == identity.name)


class QueueRoles:
    """The queue's policy (see :class:`backend.queue.QueuePolicy`): by role."""

    def may_prioritise(self, identity: Any) -> bool:
        return may_prioritise(identity)
