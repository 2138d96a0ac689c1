"""NEST sessions through the real backend: the NEST Server API under
``/v1/simulations/<id>/nest``, compared with the real NEST Server 3.10, driven by the
real ``nest-client``, paused and stopped mid-``Simulate``, idle ones ended, drop-in mode.
"""
from __future__ import annotations

import importlib.util
import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import requests
from nest_client import NESTClient
from werkzeug.exceptions import BadRequest

from tests.nest_server import RealNestServer
from tests.simserver.test_nest_api_differential import _CLOCKS, build_network, same
from tests.support import ROOT, Backend, HealthProbe, loop_experiment, wait_until

EXAMPLE_DIR = ROOT / "examples" / "nest_client_session"


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"nest_client_session_{name}",
                                                  EXAMPLE_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """One backend for the module (sessions are processes: each test makes its own)."""
    server = Backend(tmp_path_factory.mktemp("nest-sessions") / "data").start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNestServer]:
    server = RealNestServer(tmp_path_factory.mktemp("real") / "nest-server.log").start()
    try:
        yield server
    finally:
        server.stop()


def new_session(backend: Backend, **fields: Any) -> str:
    response = backend.post("/v1/simulations", json={"kernel": "nest", "state": "started",
                                                     **fields})
    assert response.status_code == 201, response.text
    record = response.json()
    assert (record["kernel"], record["experiment"], record["state"]) == ("nest", None, "started")
    return record["id"]


def nest_url(backend: Backend, sim_id: str) -> str:
    return f"{backend.url}/v1/simulations/{sim_id}/nest"


@pytest.fixture(scope="module")
def shared(backend: Backend) -> str:
    """A session for the tests that only call it (each resets its kernel)."""
    return new_session(backend, seed=7)


# -- nest-client and the seeds' example ----------------------------------------------------

def test_the_client_example_gives_exactly_pynest_n_events(backend: Backend) -> None:
    client, network = _load("client"), _load("network")
    expected = client.in_pynest(network.DEFAULT_SEED)
    assert expected > 100
    sim_id, n_events = client.in_session(backend.url, backend.token, network.DEFAULT_SEED)
    assert n_events == expected
    record = backend.wait_uploaded(sim_id, timeout=30)
    assert record["state"] == "stopped" and record["status"]["sim_time"] == 1000.0
    spikes = np.load(io.BytesIO(backend.get(
        f"/v1/simulations/{sim_id}/results/spikes.npz").content))
    assert len(spikes["spike_recorder_1002_times"]) == expected
    assert set(spikes["spike_recorder_1002_senders"]) <= set(range(2, 1002, 10))


def test_the_seeds_requests_and_curl_calls_work_at_the_session_url(backend: Backend,
                                                                   shared: str) -> None:
    url, http = nest_url(backend, shared), backend.http
    assert http.get(url).json() == {"mpi": False, "nest": "3.10.0"}
    assert "Simulate" in http.get(url + "/api").json()
    http.get(url + "/api/ResetKernel").json()
    assert http.post(url + "/api/GetDefaults",
                         json={"model": "iaf_psc_alpha"}).json()["C_m"] == 250.0
    assert http.post(url + "/api/Create",
                         json={"model": "iaf_psc_alpha", "n": 100}).json() == \
        list(range(1, 101))
    # The documented bash sequence (nest-server-api), then the documented GetStatus.
    http.get(url + "/api/ResetKernel")
    for call, body in (("Create", {"model": "iaf_psc_alpha", "n": 2}),
                       ("Create", {"model": "poisson_generator", "params": {"rate": 6500.0}}),
                       ("Create", {"model": "spike_recorder"}),
                       ("Connect", {"pre": [3], "post": [1, 2], "syn_spec": {"weight": 10.0}}),
                       ("Connect", {"pre": [1, 2], "post": [4]}),
                       ("Simulate", {"t": 1000.0})):
        assert http.post(f"{url}/api/{call}", json=body).status_code == 200, call
    n_events = http.post(url + "/api/GetStatus",
                             json={"nodes": [4], "keys": "n_events"}).json()
    assert n_events[0] > 0
    script = {"source": "n = nest.GetStatus(nest.NodeCollection([4]), 'n_events')[0]",
              "return": "n"}
    assert http.post(url + "/exec", json=script).json() == {"data": n_events[0]}


def test_nest_client_errors_are_nests_own(backend: Backend, shared: str) -> None:
    nsc = NESTClient(nest_url(backend, shared), headers=backend.auth_headers())
    with pytest.raises(BadRequest, match="UnknownModelName"):
        nsc.Create("no_such_model")
    answer = backend.post(f"/v1/simulations/{shared}/nest/api/Simulate", json={"t": -5.0})
    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["error"] == {"code": "nest_error", "nest_error": "BadParameter",
                                      "message": "The simulation time cannot be negative."}
    bad = backend.post(f"/v1/simulations/{shared}/nest/api/Create", data=b"{nope",
                       headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_json"


# -- the same answers as NEST Server, through the backend ----------------------------------

@pytest.fixture
def both(real: RealNestServer, backend: Backend, shared: str) -> Callable[..., Any]:
    """``both(method, path, body)`` -> (NEST Server's response, the backend's), after a reset."""
    url = nest_url(backend, shared)
    assert real.request("POST", "/api/ResetKernel", {}).status_code == 200
    assert backend.http.post(url + "/api/ResetKernel", json={}).status_code == 200

    def send(method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[Any, Any]:
        if body is not None:
            kwargs["json"] = body
        return (real.request(method, path, **kwargs),
                backend.http.request(method, url + path, timeout=60, **kwargs))

    return send


def test_differential_info_listing_network_and_kernel_status(both: Any) -> None:
    assert same(both("GET", "/")) == {"mpi": False, "nest": "3.10.0"}
    assert "GetStatus" in same(both("GET", "/api"))
    build_network(both)
    assert same(both("POST", "/api/GetConnections", {}))["source"] == [1, 2, 3, 3]
    assert same(both("POST", "/api/Simulate", {"t": 500.0})) is None
    assert same(both("GET", "/api/biological_time")) == 500.0
    theirs, mine = both("POST", "/api/GetKernelStatus", {})
    # A session's NEST reports warnings and up (its logs would fill with INFO lines).
    differs = (*_CLOCKS, "verbosity")
    assert {k: v for k, v in mine.json().items() if not k.startswith(differs)} == \
        {k: v for k, v in theirs.json().items() if not k.startswith(differs)}
    events = same(both("POST", "/exec", {"source": "e = nest.GetStatus(nest.NodeCollection("
                                         "[4]), 'events')[0]", "return": "e"}))
    assert len(events["data"]["times"]) > 5


def test_differential_arguments_exec_and_inspect(both: Any) -> None:
    assert same(both("POST", "/api/Create", ["iaf_psc_alpha", 3])) == [1, 2, 3]
    assert same(both("POST", "/api/Create", "spike_recorder")) == [4]
    assert same(both("GET", "/api/Create?args=iaf_psc_alpha")) == [5]
    assert same(both("GET", "/api/GetKernelStatus?keys=resolution")) == 0.1
    assert same(both("POST", "/exec", {"source": "print('hi')\nx = 3", "return": ["x"]})) == \
        {"data": {"x": 3}, "stdout": "hi"}
    assert "Simulate" in same(both("GET", "/api/Simulate?inspect=getdoc"))["data"]
    theirs, mine = both("GET", "/nowhere")
    assert theirs.status_code == mine.status_code == 404
    assert mine.json()["error"]["code"] == "not_found"


# -- the backend's own errors ---------------------------------------------------------------

def test_a_session_that_is_not_there_is_a_json_error(backend: Backend) -> None:
    assert backend.upload("loop", loop_experiment(sim_time=1e9)).status_code == 201
    script_run = backend.create("loop")["id"]
    created = backend.post("/v1/simulations", json={"kernel": "nest"}).json()["id"]
    for sim_id, status, code in (("nope", 404, "simulation_not_found"),
                                 (script_run, 404, "not_a_nest_session"),
                                 (created, 409, "session_not_started")):
        for method in ("GET", "POST"):
            answer = backend.request(method, f"/v1/simulations/{sim_id}/nest/api/Create",
                                     json={"model": "iaf_psc_alpha"})
            assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    assert backend.record(created)["state"] == "created"       # nothing changed
    assert backend.set_state(created, "stopped").status_code == 200
    backend.wait_state(created, "stopped")
    ended = backend.get(f"/v1/simulations/{created}/nest/")
    assert (ended.status_code, ended.json()["error"]["code"]) == (409, "session_ended")


@pytest.mark.parametrize("body, code", [
    ({"kernel": "python"}, "invalid_kernel"),
    ({"kernel": "nest", "experiment": "loop"}, "invalid_field"),
    ({"kernel": "nest", "params": {}}, "invalid_field"),
    ({"experiment": "loop", "threads": 2}, "invalid_field"),
    ({"kernel": "nest", "threads": 0}, "invalid_field"),
    ({"kernel": "nest", "threads": 1.5}, "invalid_field"),
    ({"kernel": "nest", "seed": 2**31}, "invalid_field"),
    ({"kernel": "nest", "idle_timeout": -1}, "invalid_field"),
    ({"kernel": "nest", "exec": "yes"}, "invalid_field"),
    ({}, "missing_field"),
])
def test_bad_session_requests_are_refused_and_change_nothing(backend: Backend, body: dict,
                                                              code: str) -> None:
    def settled() -> tuple[list[dict]] | None:
        """The list once no earlier test's run is still being wound up (its record
        changes when its logs are uploaded)."""
        found = backend.get("/v1/simulations?limit=1000").json()["simulations"]
        return (found,) if all(r["logs_uploaded"] for r in found if r["state"] in
                               ("stopped", "completed", "failed")) else None
    (before,) = wait_until(settled, 30, "earlier runs to be wound up")
    answer = backend.post("/v1/simulations", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == code
    assert backend.get("/v1/simulations?limit=1000").json()["simulations"] == before


def test_exec_can_be_turned_off_per_session(backend: Backend) -> None:
    sim_id = new_session(backend, exec=False, threads=2)
    url = nest_url(backend, sim_id)
    answer = backend.http.post(url + "/exec", json={"source": "x = 1"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "exec_disabled")
    assert backend.http.get(url + "/api/GetKernelStatus?keys=local_num_threads").json() == 2
    assert backend.set_state(sim_id, "stopped").status_code == 200


def test_cors_preflight_for_local_origins_only(backend: Backend, shared: str) -> None:
    path = f"/v1/simulations/{shared}/nest/api/GetKernelStatus"
    asked = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type"}
    local = backend.request("OPTIONS", path, headers={"Origin": "http://localhost:3000",
                                                      **asked})
    assert local.status_code == 200
    assert local.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert local.headers["Access-Control-Allow-Headers"] == "content-type"
    foreign = backend.request("OPTIONS", path, headers={"Origin": "http://evil.example",
                                                        **asked})
    assert "Access-Control-Allow-Origin" not in foreign.headers
    answer = backend.get(path, headers={"Origin": "http://127.0.0.1:8080"})
    assert answer.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8080"


# -- pause, resume and stop during a long Simulate ----------------------------------------

class Call(threading.Thread):
    """One request on a thread of its own; ``response`` once it is answered."""

    def __init__(self, method: str, url: str, body: Any, http: requests.Session) -> None:
        super().__init__(daemon=True)
        self.args_ = (method, url, body)
        self.http = http
        self.response: requests.Response | None = None
        #: What the request raised instead (the backend went away under a failed test).
        self.error: requests.RequestException | None = None

    def run(self) -> None:
        method, url, body = self.args_
        try:
            self.response = self.http.request(method, url, json=body, timeout=120)
        except requests.RequestException as exc:
            self.error = exc


def test_pause_resume_and_stop_during_a_long_simulate(backend: Backend, shared: str) -> None:
    sim_id = new_session(backend, seed=11)
    url = nest_url(backend, sim_id)
    # The example's network, built call by call.
    for call, body in (("Create", {"model": "poisson_generator", "params": {"rate": 6500.0}}),
                       ("Create", {"model": "iaf_psc_alpha", "n": 1000}),
                       ("Create", {"model": "spike_recorder"}),
                       ("Connect", {"pre": [1], "post": list(range(2, 1002)),
                                    "syn_spec": {"weight": 10.0}}),
                       ("Connect", {"pre": list(range(2, 1002, 10)), "post": [1002]})):
        assert backend.http.post(f"{url}/api/{call}", json=body).status_code == 200, call
    simulate = Call("POST", url + "/api/Simulate", {"t": 1e6}, backend.as_token(backend.token))
    other = nest_url(backend, shared)
    with HealthProbe(backend.url) as probe:
        simulate.start()
        backend.wait_advancing(sim_id, beyond=0.0)
        assert backend.set_state(sim_id, "paused").status_code == 200
        backend.wait_server_state(sim_id, "paused")
        frozen = backend.frozen_sim_time(sim_id)
        # Reads are answered between chunks; other sessions and the API go on.
        assert backend.http.get(url + "/api/biological_time").json() == frozen
        busy = backend.http.post(url + "/api/Create", json={"model": "iaf_psc_alpha"})
        assert (busy.status_code, busy.json()["error"]["code"]) == (409, "kernel_busy")
        backend.http.post(other + "/api/ResetKernel", json={})
        assert backend.http.post(other + "/api/Create", json={"model": "iaf_psc_alpha"}).json() \
            == [1]
        assert backend.get("/v1/simulations").status_code == 200
        assert simulate.is_alive()
        assert backend.set_state(sim_id, "started").status_code == 200
        backend.wait_advancing(sim_id, beyond=frozen)
        assert backend.set_state(sim_id, "stopped").status_code == 200
        simulate.join(30)
    probe.assert_fast(limit=0.2)
    assert simulate.response is not None, simulate.error
    assert simulate.response.status_code == 409
    assert simulate.response.json()["error"]["code"] == "stopped"
    record = backend.wait_uploaded(sim_id, timeout=30)
    assert record["state"] == "stopped"
    assert frozen < record["status"]["sim_time"] < 1e6
    spikes = np.load(io.BytesIO(backend.get(
        f"/v1/simulations/{sim_id}/results/spikes.npz").content))
    times = spikes["spike_recorder_1002_times"]
    assert len(times) > 0 and times.max() <= record["status"]["sim_time"]
    logs = {f["name"] for f in backend.get(f"/v1/simulations/{sim_id}/logs").json()["logs"]}
    assert {"simulation.log", "stdout.log", "stderr.log"} <= logs


def test_exec_prints_go_to_the_sessions_logs(backend: Backend) -> None:
    sim_id = new_session(backend)
    answer = backend.http.post(nest_url(backend, sim_id) + "/exec",
                           json={"source": "print('from the session')"})
    assert answer.json() == {"stdout": "from the session"}
    assert backend.set_state(sim_id, "stopped").status_code == 200
    backend.wait_uploaded(sim_id, timeout=30)
    assert "from the session" in backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log").text


def test_lasting_calls_beyond_the_cap_are_refused(make_backend: Callable[..., Backend]) -> None:
    capped = make_backend(args=("--nest-long-calls", "1")).start()
    first, second = new_session(capped), new_session(capped)
    assert capped.set_state(first, "paused").status_code == 200
    capped.wait_server_state(first, "paused")
    held = Call("POST", nest_url(capped, first) + "/api/Simulate", {"t": 100.0},
                capped.as_token(capped.token))
    held.start()   # paused: it holds its slot until resumed
    wait_until(lambda: capped.status(first)["nest_session"]["simulating"], 20,
               "the held Simulate to be in flight")
    url = nest_url(capped, second)
    refused = capped.http.post(url + "/api/Simulate", json={"t": 1.0})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "too_many_nest_calls"
    assert capped.http.post(url + "/api/Create", json={"model": "iaf_psc_alpha"}).json() == [1]
    assert capped.set_state(first, "started").status_code == 200
    held.join(30)
    assert held.response is not None, held.error
    assert held.response.status_code == 200
    assert capped.http.post(url + "/api/Simulate", json={"t": 1.0}).status_code == 200


# -- the idle timeout --------------------------------------------------------------------------

def test_an_idle_session_is_stopped_and_uploaded(backend: Backend) -> None:
    sim_id = new_session(backend, idle_timeout=1.5)
    url = nest_url(backend, sim_id)
    assert backend.http.post(url + "/api/Create", json={"model": "spike_recorder"}).json() == [1]
    record = backend.wait_state(sim_id, "stopped", timeout=20)
    assert record["nest"]["idle_stopped"] is True
    assert backend.wait_uploaded(sim_id)["nest"] == {"idle_timeout": 1.5, "idle_stopped": True}
    assert "idle" in backend.log() and sim_id in backend.log()


# -- drop-in mode --------------------------------------------------------------------------------

def dropin_url(backend: Backend) -> str:
    return json.loads((backend.data_dir / "backend.json").read_text())["nest_server_url"]


def test_dropin_mode_gives_each_key_its_own_session(make_backend: Callable[..., Backend]) -> None:
    server = make_backend(args=("--nest-server", "127.0.0.1:0")).start()
    root = dropin_url(server)
    alice_key, bob_key = server.create_key("alice", "scientist"), server.create_key("bob",
                                                                                    "scientist")
    alice = NESTClient(root, headers={"NESTServerAuth": alice_key})
    bob = NESTClient(root, headers={"Authorization": f"Bearer {bob_key}"})
    assert alice.Create("iaf_psc_alpha") == [1]
    assert bob.Create("iaf_psc_alpha", 2) == [1, 2]            # a kernel of its own
    assert alice.Create("iaf_psc_alpha") == [2]                # the same session again
    assert requests.get(root + "/", headers={"NESTServerAuth": alice_key}).json() == \
        {"mpi": False, "nest": "3.10.0"}
    # No token, a wrong one, or a role that may not run NEST code: refused, no session.
    assert requests.get(root + "/").status_code == 401
    assert requests.get(root + "/", headers={"NESTServerAuth": "sbk_nope"}).status_code == 401
    observer = server.create_key("olga", "observer")
    assert requests.get(root + "/", headers={"NESTServerAuth": observer}).status_code == 403
    sessions = server.get("/v1/simulations").json()["simulations"]
    assert len(sessions) == 2 and {s["kernel"] for s in sessions} == {"nest"}
    assert {s["owner"] for s in sessions} == {"alice", "bob"}
    assert all(key not in json.dumps(s) for s in sessions for key in (alice_key, bob_key))
    # A session ended over /v1 is replaced by a fresh one on the key's next call.
    alices = next(s["id"] for s in sessions if s["owner"] == "alice")
    assert server.set_state(alices, "stopped").status_code == 200
    server.wait_state(alices, "stopped")
    assert alice.Create("iaf_psc_alpha") == [1]
    with pytest.raises(BadRequest, match="UnknownModelName"):
        bob.Create("no_such_model")
    assert len(server.get("/v1/simulations").json()["simulations"]) == 3


def test_nest_server_command_defaults_to_nest_servers_port() -> None:
    from backend.cli import DROPIN_ADDRESS, _parser, config_overrides

    assert DROPIN_ADDRESS == "127.0.0.1:52425"
    assert config_overrides(_parser().parse_args(["nest-server"]), {})["nest_server"] == \
        DROPIN_ADDRESS
    assert config_overrides(_parser().parse_args(["serve"]), {}).get("nest_server") is None
    assert config_overrides(_parser().parse_args(
        ["nest-server", "--nest-server", "0.0.0.0:6000"]), {})["nest_server"] == "0.0.0.0:6000"
