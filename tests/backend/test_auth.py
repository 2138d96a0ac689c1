"""Authentication, roles, ownership and the audit, through a real backend over HTTP.

The matrix is generated from the routes the app serves (its URL map: ``ROUTES`` and
anything registered otherwise): a new route that is not in :data:`EXPECTED` fails the
test, so none can be forgotten.
"""
from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from backend.app import ROUTES
from tests.backend.test_events import read_until, sse
from tests.support import NO_POOL, ROOT, Backend, loop_experiment, wait_until

pytestmark = pytest.mark.slow

#: Open to anyone: probes, the API description, the dashboard's static files.
PUBLIC = {"/health", "/ready", "/openapi.json", "/ui", "/ui/", "/ui/<file>"}
ROLES = ("admin", "operator", "scientist", "observer")
ORIGIN = "https://portal.example.org"

#: ``(route, method) -> outcome for admin, operator, scientist, observer`` on a simulation
#: and an experiment owned by another scientist (bob): ``o`` allowed, ``f`` 403, ``h`` 404
#: (the simulation is not revealed). The README's roles table says the same.
EXPECTED = {
    ("/", "GET"): "oooo",
    ("/v1/whoami", "GET"): "oooo",
    ("/v1/audit", "GET"): "ooff",
    ("/v1/experiments", "GET"): "oooo",
    ("/v1/experiments/<path:name>", "GET"): "oooo",
    ("/v1/experiments/<path:name>", "PUT"): "offf",
    ("/v1/experiments/<path:name>", "DELETE"): "offf",
    ("/v1/simulations", "GET"): "oooo",
    ("/v1/simulations", "POST"): "ofof",
    ("/v1/simulations/<sim_id>", "GET"): "ooho",
    ("/v1/simulations/<sim_id>", "DELETE"): "ofhf",
    ("/v1/simulations/<sim_id>/state", "GET"): "ooho",
    ("/v1/simulations/<sim_id>/state", "PUT"): "oohf",
    ("/v1/simulations/<sim_id>/status", "GET"): "ooho",
    ("/v1/simulations/<sim_id>/logs", "GET"): "ooho",
    ("/v1/simulations/<sim_id>/logs/<path:name>", "GET"): "ooho",
    ("/v1/simulations/<sim_id>/results", "GET"): "ooho",
    ("/v1/simulations/<sim_id>/results/<path:name>", "GET"): "ooho",
    ("/v1/queue", "GET"): "oooo",
    ("/v1/queue/<sim_id>", "GET"): "ooho",
    ("/v1/queue/<sim_id>", "PUT"): "oohf",
    ("/v1/queue/<sim_id>", "DELETE"): "oohf",
    ("/v1/simulations/<sim_id>/events", "GET"): "ooho",
    ("/v1/events", "GET"): "oooo",
    **{(route, method): "ofhf"
       for route in ("/v1/simulations/<sim_id>/nest", "/v1/simulations/<sim_id>/nest/",
                     "/v1/simulations/<sim_id>/nest/<path:rest>")
       for method in ("GET", "POST")},
}
#: Bodies that an allowed caller gets refused for after authorization (400, 404, 409,
#: 415): the matrix changes nothing, whoever asks.
BODIES: dict[str, dict[str, Any]] = {
    "POST /v1/simulations": {"json": {"experiment": "no-such-experiment"}},
    "PUT /v1/simulations/<sim_id>/state": {"json": {"state": "bogus"}},
    "PUT /v1/queue/<sim_id>": {"json": {}},
    "PUT /v1/experiments/<path:name>": {"data": b"x",
                                        "headers": {"Content-Type": "text/plain"}},
}


def served_routes(data_dir: Path) -> list[tuple[str, str]]:
    """Every (route, method) an app serves, from its URL map."""
    from backend.app import create_app
    from backend.config import Config

    app = create_app(Config(data_dir=data_dir, examples_dir="", no_auth=True, **NO_POOL))
    app.extensions["simbackend"].close()
    return sorted((rule.rule, method) for rule in app.url_map.iter_rules()
                  if rule.endpoint != "static"
                  for method in rule.methods or () if method not in ("HEAD", "OPTIONS"))


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str]]:
    found = served_routes(tmp_path_factory.mktemp("routes"))
    assert {rule for rule, _ in found} >= {rule for _, rule in ROUTES}
    return found


class World:
    """One backend with a key per role and things owned by admin, alice and bob."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.tokens = {"admin": backend.token,
                       "operator": backend.create_key("oscar", "operator"),
                       "scientist": backend.create_key("alice", "scientist"),
                       "observer": backend.create_key("olga", "observer")}
        self.bob = backend.create_key("bob", "scientist")
        self.bad = {"none": None, "invalid": "sbk_0123456789abcdef_" + "x" * 43,
                    "jwt-shaped": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
                    "expired": backend.create_key("eve", "admin", expires="1s"),
                    "revoked": backend.create_key("rob", "admin")}
        assert backend.keys("revoke", "rob").returncode == 0
        expires = next(k["expires_at"] for k in self.keys() if k["name"] == "eve")
        wait_until(lambda: utc_now() > expires, 10, "eve's key to expire")
        self.as_bob = backend.as_token(self.bob)
        assert self.http("PUT", "/v1/experiments/bobs", self.as_bob, data=_archive(),
                         headers={"Content-Type": "application/gzip"}).status_code == 201
        answer = self.http("POST", "/v1/simulations", self.as_bob, json={"experiment": "bobs"})
        assert answer.status_code == 201, answer.text
        self.bobs_sim = answer.json()["id"]

    def keys(self) -> list[dict[str, Any]]:
        return json.loads(self.backend.keys("list", "--json").stdout)["keys"]

    def http(self, method: str, path: str, session: requests.Session,
             **kwargs: Any) -> requests.Response:
        return session.request(method, self.backend.url + path, timeout=30, **kwargs)

    def state(self) -> Any:
        """Everything a refused request must leave as it was."""
        get = self.backend.get
        return (get("/v1/simulations?limit=1000").json(), get("/v1/experiments").json(),
                get(f"/v1/simulations/{self.bobs_sim}/status").json()["state"])

    def path(self, route: str) -> str:
        return (route.replace("<sim_id>", self.bobs_sim).replace("<path:name>", "bobs")
                .replace("<path:rest>", "api/GetKernelStatus"))

    def call(self, route: str, method: str, session: requests.Session,
             allowed: bool = False) -> requests.Response:
        """Call ``method route`` on bob's things; an allowed DELETE of an experiment
        names one that does not exist (the matrix changes nothing)."""
        path = self.path(route)
        if allowed and method == "DELETE" and route.startswith("/v1/experiments/"):
            path = path.replace("/bobs", "/no-such-experiment")
        if route.endswith("<path:name>") and route.startswith("/v1/simulations"):
            path = path.replace("/bobs", "/none.txt")
        kwargs = dict(BODIES.get(f"{method} {route}", {}))
        if method in ("PUT", "POST") and not kwargs:
            kwargs["json"] = {}
        answer = self.http(method, path, session, stream=route.endswith("events"), **kwargs)
        if answer.status_code != 200 or not route.endswith("events"):
            answer.content  # noqa: B018  (read the whole answer before closing)
        answer.close()
        return answer


def requested_by(backend: Backend, sim_id: str) -> dict[str, str | None]:
    """``{state: requested_by}`` of the simulation's saved state events (its history)."""
    with sqlite3.connect(backend.data_dir / "simbackend.sqlite3") as db:
        rows = db.execute("SELECT data FROM events WHERE sim_id = ? AND type = 'state'",
                          (sim_id,)).fetchall()
    return {(data := json.loads(row))["state"]: data.get("requested_by") for (row,) in rows}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _archive() -> bytes:
    from tests.support import make_archive

    return make_archive(loop_experiment(sim_time=1e9))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    backend = Backend(tmp_path_factory.mktemp("auth") / "data",
                      args=("--auth-failure-burst", "100000", "--cors-origins", ORIGIN))
    backend.start()
    try:
        yield World(backend)
    finally:
        backend.cleanup()


def assert_error(answer: requests.Response, status: int, code: str | None = None) -> None:
    assert answer.status_code == status, (answer.request.method, answer.url, answer.text)
    assert answer.headers["Content-Type"].startswith("application/json")
    if code:
        assert answer.json()["error"]["code"] == code, answer.text


# -- the matrix --------------------------------------------------------------------------

def test_every_route_has_a_documented_rule(routes: list[tuple[str, str]]) -> None:
    served = set(routes)
    assert served - {(r, m) for r, m in served if r in PUBLIC} == set(EXPECTED), \
        "a route has no expected outcome per role: add it to EXPECTED (and the README)"


def test_every_route_refuses_missing_invalid_expired_and_revoked_tokens(
        world: World, routes: list[tuple[str, str]]) -> None:
    before = world.state()
    for route, method in routes:
        for kind, token in world.bad.items():
            answer = world.call(route, method, world.backend.as_token(token))
            if route in PUBLIC:  # a token, good or bad, changes nothing there
                assert answer.status_code in (200, 308, 404, 503), (route, kind)
                continue
            assert_error(answer, 401, "unauthenticated")
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert (token or "-") not in answer.text
    assert world.state() == before


def test_every_route_gives_each_role_its_documented_status(
        world: World, routes: list[tuple[str, str]]) -> None:
    before = world.state()
    for route, method in routes:
        if route in PUBLIC:
            continue
        for role, outcome in zip(ROLES, EXPECTED[(route, method)], strict=True):
            answer = world.call(route, method, world.backend.as_token(world.tokens[role]),
                                allowed=outcome == "o")
            where = (role, method, route, answer.status_code, answer.text[:200])
            if outcome == "f":
                assert_error(answer, 403, "forbidden")
            elif outcome == "h":
                assert_error(answer, 404, "simulation_not_found")
                assert world.bobs_sim in answer.json()["error"]["message"]
            else:
                assert answer.status_code not in (401, 403), where
                assert answer.status_code < 500, where
                if answer.status_code == 404:
                    assert answer.json()["error"]["code"] != "simulation_not_found", where
    assert world.state() == before


def test_a_hidden_simulation_answers_as_one_that_does_not_exist(world: World) -> None:
    alice = world.backend.as_token(world.tokens["scientist"])
    hidden = world.http("GET", f"/v1/simulations/{world.bobs_sim}", alice).json()
    missing = world.http("GET", "/v1/simulations/nothing-here", alice).json()
    assert hidden["error"]["message"].replace(world.bobs_sim, "X") == \
        missing["error"]["message"].replace("nothing-here", "X")


# -- roles and ownership -------------------------------------------------------------------

def test_whoami_names_the_caller(world: World) -> None:
    for role, name in (("admin", "admin"), ("operator", "oscar"), ("scientist", "alice"),
                       ("observer", "olga")):
        answer = world.http("GET", "/v1/whoami", world.backend.as_token(world.tokens[role]))
        assert answer.json() == {"name": name, "role": role, "kind": "api_key"}


def test_a_scientist_owns_what_they_create_and_sees_only_that(world: World) -> None:
    alice = world.backend.as_token(world.tokens["scientist"])
    assert world.http("POST", "/v1/simulations", alice,
                      json={"experiment": "bobs", "owner": "bob"}).status_code == 403
    mine = world.http("POST", "/v1/simulations", alice, json={"experiment": "bobs"}).json()
    assert mine["owner"] == "alice"                  # experiments are shared for running
    listed = world.http("GET", "/v1/simulations", alice).json()["simulations"]
    assert {s["owner"] for s in listed} == {"alice"} and mine["id"] in {s["id"] for s in listed}
    everyone = world.http("GET", "/v1/simulations?limit=1000",
                          world.backend.as_token(world.tokens["observer"])).json()
    assert {"alice", "bob"} <= {s["owner"] for s in everyone["simulations"]}
    # The operator controls anyone's run; the event says who asked.
    oscar = world.backend.as_token(world.tokens["operator"])
    assert world.http("PUT", f"/v1/simulations/{mine['id']}/state", oscar,
                      json={"state": "stopped"}).status_code == 200
    asked = wait_until(lambda: (a := requested_by(world.backend, mine["id"])).get("stopped")
                       and a, 10, "the stop to be saved")
    assert asked == {"created": "alice", "stopped": "oscar"}
    # Her own: read and delete (once wound up), as an operator may not.
    world.backend.wait_uploaded(mine["id"])
    own = f"/v1/simulations/{mine['id']}"
    assert world.http("GET", own + "/logs", alice).status_code == 200
    assert world.http("DELETE", own, oscar).status_code == 403
    assert world.http("DELETE", own, alice).status_code == 204
    # Only the admin may create for someone else; the priority stays an operator's.
    admin = world.backend.as_token(world.tokens["admin"])
    given = world.http("POST", "/v1/simulations", admin,
                       json={"experiment": "bobs", "owner": "bob", "priority": 5}).json()
    assert (given["owner"], given["priority"]) == ("bob", 5)
    assert world.http("POST", "/v1/simulations", alice,
                      json={"experiment": "bobs", "priority": 5}).status_code == 403


def test_experiments_are_replaced_or_deleted_by_their_owner_or_an_admin(world: World) -> None:
    alice = world.backend.as_token(world.tokens["scientist"])
    upload = {"data": _archive(), "headers": {"Content-Type": "application/gzip"}}
    assert world.http("PUT", "/v1/experiments/alices", alice, **upload).status_code == 201
    assert world.http("GET", "/v1/experiments/alices", alice).json()["owner"] == "alice"
    assert world.http("PUT", "/v1/experiments/alices", world.as_bob, **upload).status_code == 403
    assert world.http("DELETE", "/v1/experiments/alices", world.as_bob).status_code == 403
    assert world.http("PUT", "/v1/experiments/alices", alice, **upload).status_code == 200
    admin = world.backend.as_token(world.tokens["admin"])
    assert world.http("PUT", "/v1/experiments/alices", admin, **upload).status_code == 200
    listed = world.http("GET", "/v1/experiments", world.as_bob).json()["experiments"]
    assert next(e for e in listed if e["name"] == "alices")["owner"] == "alice"  # kept
    assert world.http("DELETE", "/v1/experiments/alices", admin).status_code == 204


def test_all_events_show_only_what_the_caller_may_see(world: World) -> None:
    alice = world.backend.as_token(world.tokens["scientist"])
    last = world.http("POST", "/v1/simulations", alice, json={"experiment": "bobs"}).json()
    stream = world.http("GET", "/v1/events?status=false&last_event_id=0", alice, stream=True)
    seen = read_until(sse(stream), lambda e: e["data"].get("sim_id") == last["id"])
    stream.close()
    owners = {s["id"]: s["owner"] for s in world.backend.get(
        "/v1/simulations?limit=1000").json()["simulations"]}
    assert {owners.get(e["data"]["sim_id"]) for e in seen} == {"alice"}


def test_the_statuses_a_stream_of_all_events_opens_with_are_the_callers_runs(
        world: World) -> None:
    alice = world.backend.as_token(world.tokens["scientist"])
    admin = world.backend.as_token(world.tokens["admin"])
    runs = {}
    # A run has a status once the backend has heard from its server (its server_state
    # event), which may come after the run moves: heard of both, before the streams.
    heard = world.http("GET", "/v1/events?status=false", admin, stream=True)
    for who, session in (("bob", world.as_bob), ("alice", alice)):  # bob's first
        answer = world.http("POST", "/v1/simulations", session,
                            json={"experiment": "bobs", "state": "started"})
        assert answer.status_code == 201, answer.text
        runs[who] = answer.json()["id"]
    try:
        started: set[str] = set()

        def both_heard_of(event: dict) -> bool:
            if event["event"] == "server_state" and event["data"]["state"] == "started":
                started.add(event["data"]["sim_id"])
            return started >= set(runs.values())

        read_until(sse(heard), both_heard_of)
        heard.close()
        after = world.backend.get("/v1/simulations?limit=1").json()["last_event_id"]
        # Nothing after the cursor to replay: what comes first is where the live runs are.
        for session, expected in ((alice, [runs["alice"]]),
                                  (admin, [runs["bob"], runs["alice"]])):
            stream = world.http("GET", f"/v1/events?last_event_id={after}", session,
                                stream=True)
            seen = read_until(sse(stream), lambda e: e["event"] == "status"
                              and e["data"]["sim_id"] == runs["alice"])
            stream.close()
            told = [e["data"]["sim_id"] for e in seen if e["event"] == "status"]
            assert [s for s in told if s in runs.values()] == expected, told
    finally:
        for sim_id in runs.values():
            world.backend.put(f"/v1/simulations/{sim_id}/state", json={"state": "stopped"})
        for sim_id in runs.values():
            world.backend.wait_state(sim_id, "stopped")


# -- keys ------------------------------------------------------------------------------------

def test_the_admin_key_file_is_private_and_never_logged(world: World) -> None:
    key_file = world.backend.admin_key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    log = world.backend.log()
    assert str(key_file) in log
    for token in (world.backend.token, *world.tokens.values(), world.bob):
        assert token not in log
        assert token not in (world.backend.data_dir / "simbackend.sqlite3").read_bytes().decode(
            "latin-1")


def test_keys_are_listed_without_secrets_and_record_their_last_use(world: World) -> None:
    done = world.backend.keys("list")
    assert done.returncode == 0 and "olga" in done.stdout
    assert all(token not in done.stdout for token in world.tokens.values())
    entries = {k["name"]: k for k in world.keys()}
    assert entries["eve"]["active"] is False and entries["rob"]["revoked_at"]
    assert entries["olga"]["last_used_at"] is not None
    assert "digest" not in entries["olga"]


def test_a_revoked_key_is_refused_at_its_next_request(world: World) -> None:
    token = world.backend.create_key("temp", "observer")
    session = world.backend.as_token(token)
    assert world.http("GET", "/v1/whoami", session).status_code == 200
    assert world.backend.keys("revoke", "temp").returncode == 0
    assert_error(world.http("GET", "/v1/whoami", session), 401, "unauthenticated")
    assert world.backend.keys("revoke", "temp").returncode == 2  # none left to revoke


def test_bad_key_requests_are_refused_by_the_cli(world: World) -> None:
    for args in (("create", "--name", "x", "--role", "god"),
                 ("create", "--name", "../x", "--role", "admin"),
                 ("create", "--name", "x", "--role", "admin", "--expires", "soon")):
        done = world.backend.keys(*args)
        assert done.returncode == 2 and "simbackend keys:" in done.stderr, args


# -- the audit -------------------------------------------------------------------------------

def test_every_mutation_is_audited_and_the_audit_cannot_be_changed(world: World) -> None:
    alice = world.backend.as_token(world.tokens["scientist"])
    since = utc_now()
    created = world.http("POST", "/v1/simulations", alice, json={"experiment": "bobs"}).json()
    world.http("PUT", f"/v1/simulations/{created['id']}/state", alice, json={"state": "stopped"})
    world.http("DELETE", f"/v1/simulations/{world.bobs_sim}", alice)            # hidden: 404
    world.http("DELETE", f"/v1/simulations/{created['id']}", world.backend.as_token(None))
    oscar = world.backend.as_token(world.tokens["operator"])
    entries = world.http("GET", f"/v1/audit?since={since}", oscar).json()["audit"]
    got = [(e["identity"], e["role"], e["method"], e["path"], e["target"], e["status"])
           for e in reversed(entries)]
    sim = f"/v1/simulations/{created['id']}"
    assert got == [
        ("alice", "scientist", "POST", "/v1/simulations", created["id"], 201),
        ("alice", "scientist", "PUT", f"{sim}/state", created["id"], 200),
        ("alice", "scientist", "DELETE", f"/v1/simulations/{world.bobs_sim}", world.bobs_sim,
         404),
        ("unauthenticated", "none", "DELETE", sim, created["id"], 401),
    ]
    assert all(e["client"] == "127.0.0.1" and e["time"] >= since for e in entries)
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    # Filters, each alone and together.
    query = world.http("GET", "/v1/audit", oscar, params={
        "identity": "alice", "method": "put", "target": created["id"], "status": 200})
    assert [e["path"] for e in query.json()["audit"]] == [f"{sim}/state"]
    assert len(world.http("GET", "/v1/audit?limit=1", oscar).json()["audit"]) == 1
    for bad in ("limit=0", "limit=1001", "since=yesterday", "status=x"):
        assert_error(world.http("GET", f"/v1/audit?{bad}", oscar), 400)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert world.http(method, "/v1/audit", world.backend.as_token(
            world.tokens["admin"])).status_code == 405
    after = world.http("GET", f"/v1/audit?since={since}", oscar).json()["audit"]
    assert [(e["method"], e["status"]) for e in after[:4]] == \
        [("PATCH", 405), ("DELETE", 405), ("PUT", 405), ("POST", 405)]
    assert after[4:] == entries                     # the refused attempts changed nothing


def test_key_changes_by_the_cli_are_audited(world: World) -> None:
    world.backend.create_key("audited", "observer")
    entries = world.backend.get("/v1/audit?method=CLI").json()["audit"]
    assert entries[0]["path"] == "keys create" and entries[0]["role"] == "admin"
    assert entries[0]["identity"].startswith("cli:")


# -- CORS --------------------------------------------------------------------------------------

def test_cors_lets_the_configured_origin_call_with_a_token(world: World) -> None:
    preflight = world.http("OPTIONS", "/v1/simulations", world.backend.as_token(None), headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    answer = world.http("GET", "/v1/whoami", world.backend.as_token(world.tokens["observer"]),
                        headers={"Origin": ORIGIN})
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = world.http("OPTIONS", "/v1/simulations", world.backend.as_token(None),
                       headers={"Origin": "https://evil.example",
                                "Access-Control-Request-Method": "DELETE"})
    assert "Access-Control-Allow-Origin" not in other.headers


# -- the rate limit, the start-up checks ----------------------------------------------------

def test_failed_authentications_are_rate_limited_per_address(make_backend) -> None:
    backend = make_backend(args=("--auth-failure-burst", "3", "--auth-failure-rate",
                                 "0.001")).start()
    wrong = backend.as_token("sbk_0123456789abcdef_" + "y" * 43)
    for _ in range(3):
        assert_error(wrong.get(backend.url + "/v1/whoami"), 401, "unauthenticated")
    limited = wrong.get(backend.url + "/v1/whoami")
    assert_error(limited, 429, "too_many_failures")
    assert "Retry-After" in limited.headers
    # Even the right key from that address waits: guessing learns nothing meanwhile.
    assert_error(backend.get("/v1/whoami"), 429, "too_many_failures")
    assert backend.get("/health").status_code == 200
    log = backend.log()
    assert "authentication failed" in log and "y" * 43 not in log


def test_a_flood_of_unauthenticated_mutations_cannot_fill_the_audit(make_backend) -> None:
    backend = make_backend(args=("--auth-failure-burst", "3", "--auth-failure-rate",
                                 "0.001")).start()
    anonymous, long_id = backend.as_token(None), "x" * 20_000
    answers = [anonymous.delete(f"{backend.url}/v1/simulations/{long_id}").status_code
               for _ in range(10)]
    assert answers == [401] * 3 + [429] * 7
    assert anonymous.get(backend.url + "/v1/simulations").status_code == 429  # still limited
    with sqlite3.connect(backend.data_dir / "simbackend.sqlite3") as db:
        rows = db.execute("SELECT identity, status, length(target), length(path) FROM audit"
                          " WHERE method = 'DELETE'").fetchall()
    assert rows == [("unauthenticated", 401, 512, 512)] * 3


def test_a_public_host_without_authentication_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backend.cli", "serve", "--host", "0.0.0.0", "--no-auth",
         "--port", "0", "--data-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 2
    assert "without authentication" in done.stderr and "loopback" in done.stderr


def test_no_auth_on_loopback_makes_everyone_an_anonymous_admin(make_backend) -> None:
    backend = make_backend(args=("--no-auth",)).start()
    assert backend.token is None and not backend.admin_key_file.exists()
    assert backend.get("/v1/whoami").json() == {"name": "anonymous", "role": "admin",
                                                "kind": "none"}
    assert backend.upload("x", loop_experiment()).status_code == 201
    assert backend.get("/v1/audit").json()["audit"][0]["identity"] == "anonymous"


def test_the_client_reads_the_admin_key_of_a_loopback_backend_only(make_backend,
                                                                   monkeypatch) -> None:
    from client.settings import resolve_token

    backend = make_backend().start()
    monkeypatch.delenv("SIMBACKEND_TOKEN", raising=False)
    monkeypatch.setenv("SIMBACKEND_DATA_DIR", str(backend.data_dir))
    assert resolve_token(None, backend.url) == backend.token
    assert resolve_token(None, "https://simbackend.lab.example.org") is None
    monkeypatch.setenv("SIMBACKEND_TOKEN", "given")
    assert resolve_token(None, "https://simbackend.lab.example.org") == "given"

