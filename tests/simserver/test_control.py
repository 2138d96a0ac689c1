"""The control API's count of requests in flight, which makes the run loop step one at
a time while a request needs the GIL (see ``RunLoop.attending``), with a real server
on loopback and a target that records what it was told."""
from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from simserver.control import ControlServer
from simserver.events import EventLog
from tests.support import wait_until

TOKEN = "t" * 32


class Target:
    """Records the count of requests in flight after every change."""

    def __init__(self) -> None:
        self.events = EventLog()
        self.counts: list[int] = []
        self._lock = threading.Lock()
        self.in_flight = 0
        self.seen_by_command: int | None = None

    def attend(self, change: int) -> None:
        with self._lock:
            self.in_flight += change
            self.counts.append(self.in_flight)

    def status(self) -> dict[str, Any]:
        return {"state": "started"}

    def command(self, name: str) -> dict[str, Any]:
        self.seen_by_command = self.in_flight
        if name != "pause":
            raise ValueError(f"unknown command {name!r}")
        return {"state": "paused"}


@pytest.fixture
def served() -> Iterator[tuple[Target, int]]:
    target = Target()
    server = ControlServer("127.0.0.1", TOKEN, target)
    server.serve_in_thread()
    try:
        yield target, server.port
    finally:
        server.shutdown()
        server.server_close()


def call(conn: http.client.HTTPConnection, method: str, path: str,
         body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    answer = conn.getresponse()
    return answer.status, json.loads(answer.read())


def test_a_request_is_attended_until_answered_not_while_kept_alive(
        served: tuple[Target, int]) -> None:
    target, port = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        assert call(conn, "POST", "/command", {"command": "pause"}) == \
            (200, {"state": "paused"})
        assert target.seen_by_command == 1               # counted while it was served
        assert call(conn, "POST", "/command", {"command": "nope"})[0] == 400
        assert call(conn, "GET", "/status")[0] == 200
        # The connection stays open (keep-alive), its thread waiting: not counted.
        wait_until(lambda: target.in_flight == 0, 5, "the requests to be counted out")
        assert target.counts == [1, 0, 1, 0, 1, 0]
    finally:
        conn.close()


def test_an_events_wait_is_not_attended(served: tuple[Target, int]) -> None:
    target, port = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    answer: list[Any] = []
    waiting = threading.Thread(target=lambda: answer.append(
        call(conn, "GET", "/events?after=0&wait=10")))
    waiting.start()
    try:
        wait_until(lambda: target.counts == [1, 0], 5, "the events request to wait")
        target.events.append("state", state="paused")
        waiting.join(10)
        assert answer and answer[0][0] == 200 and answer[0][1]["events"][0]["kind"] == "state"
        wait_until(lambda: target.in_flight == 0, 5, "the request to be counted out")
        assert target.counts == [1, 0, 1, 0]
    finally:
        waiting.join(10)
        conn.close()
