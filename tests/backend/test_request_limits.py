"""Request bodies and listings are bounded; odd JSON gets a 400, never a 500."""
from __future__ import annotations

import json
import socket

import pytest

from tests.support import Backend


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.json()["error"]["code"] == code


def post(backend: Backend, raw: str | bytes):
    return backend.post("/v1/simulations", data=raw,
                        headers={"Content-Type": "application/json"})


def test_a_json_body_over_the_cap_is_413_and_creates_nothing(backend: Backend, loop: str) -> None:
    big = json.dumps({"experiment": loop, "params": {"x": "y" * (2 << 20)}})
    assert_error(post(backend, big), 413, "too_large")
    assert backend.get("/v1/simulations").json()["simulations"] == []
    assert backend.get("/health").status_code == 200


def test_a_chunked_json_body_over_the_cap_is_refused(backend: Backend, loop: str) -> None:
    def chunks():
        yield b'{"experiment": "loop", "params": {"x": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}}'

    # The front refuses chunked bodies on JSON routes before they are read (411).
    assert_error(post(backend, chunks()), 411, "length_required")
    assert backend.get("/v1/simulations").json()["simulations"] == []


def test_params_over_their_cap_are_refused(backend: Backend, loop: str) -> None:
    body = json.dumps({"experiment": loop, "params": {"x": "y" * (100 * 1024)}})
    assert_error(post(backend, body), 400, "invalid_params")


@pytest.mark.parametrize("raw,code", [
    ('{"experiment": "loop", "params": {"x": NaN}}', "bad_json"),
    ('{"experiment": "loop", "params": {"x": Infinity}}', "bad_json"),
    ('{"experiment": "loop", "params": {"x": -Infinity}}', "bad_json"),
    ('{"experiment": "loop", "params": {"x": ' + "[" * 40 + "]" * 40 + '}}', "bad_json"),
    ("[" * 100_000 + "]" * 100_000, "bad_json"),
    ('{"experiment": "loop", "params": {"x": ' + "9" * 5000 + "}}", "bad_json"),
    ('{"experiment": "loop", "timeout": {"sim_time": ' + "9" * 400 + "}}", "invalid_timeout"),
    ('{"experiment": "loop", "limits": {"memory_mb": ' + "9" * 400 + "}}", "invalid_limits"),
])
def test_odd_json_is_a_400(backend: Backend, loop: str, raw: str, code: str) -> None:
    assert_error(post(backend, raw), 400, code)
    assert backend.get("/v1/simulations").json()["simulations"] == []


def test_a_400_digit_param_is_kept_as_it_is(backend: Backend, loop: str) -> None:
    raw = '{"experiment": "loop", "params": {"big": ' + "7" * 400 + "}}"
    response = post(backend, raw)
    assert response.status_code == 201, response.text
    assert response.json()["params"]["big"] == int("7" * 400)


@pytest.mark.parametrize("query", ["offset=%C2%B2", "offset=%D9%A3", "limit=1e3",
                                   "offset=" + "9" * 400, "offset=-1"])
def test_odd_byte_ranges_are_a_400(backend: Backend, loop: str, query: str) -> None:
    sim_id = backend.create(loop)["id"]
    response = backend.get(f"/v1/simulations/{sim_id}/logs/stdout.log?{query}")
    assert_error(response, 400, "invalid_argument")


def test_every_list_is_paged(backend: Backend, loop: str) -> None:
    created = [backend.create(loop, id=f"s{i:03d}")["id"] for i in range(25)]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        body = backend.get("/v1/simulations", params=params).json()
        seen += [s["id"] for s in body["simulations"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == created and pages == 3
    default = backend.get("/v1/simulations").json()
    assert len(default["simulations"]) == 25 and default["next_cursor"] is None
    first = backend.get("/v1/experiments", params={"limit": 1}).json()
    assert len(first["experiments"]) == 1
    for query in ("limit=0", "limit=1001", "cursor=nonsense!", "limit=x"):
        assert_error(backend.get(f"/v1/simulations?{query}"), 400, "invalid_argument")


def test_a_body_left_unsent_does_not_hold_up_health(backend: Backend, loop: str) -> None:
    host, port = backend.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/simulations HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        assert backend.get("/health", timeout=2).status_code == 200
