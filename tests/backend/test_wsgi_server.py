"""The HTTP front under attack, with raw sockets: idle and slow connections, chunked
bodies that never end, and the server's own errors in JSON; its worker threads, started
as requests need them."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import psutil
import pytest

from backend.wsgi_server import GrowingDispatcher
from tests.support import Backend, HealthProbe, loop_experiment, make_archive, wait_until

IDLE_SOCKETS = 150


def _address(backend: Backend) -> tuple[str, int]:
    parts = urlsplit(backend.url)
    return parts.hostname, parts.port


def _connect(backend: Backend) -> socket.socket:
    return socket.create_connection(_address(backend), timeout=5)


def _accepted(backend: Backend) -> int:
    """How many connections to its port the backend process has accepted (holds)."""
    port = _address(backend)[1]
    return sum(c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
               for c in psutil.Process(backend.proc.pid).net_connections(kind="tcp"))


def _answer(sock: socket.socket, limit: int = 1 << 16) -> tuple[int, dict, bytes]:
    """Read one HTTP answer that ends with the connection; return status, headers, body."""
    data = b""
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _assert_json_error(status: int, headers: dict, body: bytes, *statuses: int) -> dict:
    assert status in statuses, (status, body)
    assert headers["content-type"].startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert error["code"] and error["message"], error
    return error


@pytest.fixture
def idle_sockets(backend: Backend) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_health_answers_while_idle_sockets_hold_connections(backend: Backend,
                                                            idle_sockets) -> None:
    for _ in range(IDLE_SOCKETS):
        idle_sockets.append(_connect(backend))
    wait_until(lambda: _accepted(backend) >= IDLE_SOCKETS, 10, "the server to accept them all")
    with HealthProbe(backend.url) as probe:
        time.sleep(1.5)  # the probe's window: /health timed all along
    probe.assert_fast()


def test_at_the_connection_limit_the_longest_idle_socket_makes_room(make_backend) -> None:
    backend = make_backend(args=("--connection-limit", "20")).start()
    socks = []
    try:
        for _ in range(IDLE_SOCKETS):
            socks.append(_connect(backend))
            socks[-1].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
        with HealthProbe(backend.url) as probe:
            time.sleep(1.5)  # the probe's window: /health timed all along
        probe.assert_fast()
        # The first sockets were closed by the server to make room.
        socks[0].settimeout(2)
        assert socks[0].recv(1) == b""
    finally:
        for sock in socks:
            sock.close()


def test_a_chunk_size_line_that_never_ends_does_not_slow_health(backend: Backend) -> None:
    sock = _connect(backend)
    sock.sendall(b"PUT /v1/experiments/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/gzip"
                 b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent, refused = 0, threading.Event()

    def attack() -> None:
        nonlocal sent
        block = b"f" * 16384
        deadline = time.monotonic() + 3
        try:
            while time.monotonic() < deadline and sent < 64 << 20:
                sock.sendall(block)
                sent += len(block)
        except OSError:
            refused.set()

    attacker = threading.Thread(target=attack)
    with HealthProbe(backend.url) as probe:
        attacker.start()
        attacker.join(10)
    probe.assert_fast()
    status, headers, body = _answer(sock)
    sock.close()
    error = _assert_json_error(status, headers, body, 400)
    assert "chunk-size line" in error["message"]
    assert sent < 8 << 20, f"the server kept reading a chunk-size line for {sent} bytes"


@pytest.mark.parametrize("request_line", [
    b"PUT /v1/simulations/x/state HTTP/1.1",
    b"POST /v1/simulations HTTP/1.1",
])
def test_a_chunked_body_to_a_json_route_gets_a_json_411(backend: Backend,
                                                        request_line: bytes) -> None:
    sock = _connect(backend)
    began = time.monotonic()
    sock.sendall(request_line + b"\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" + b"1000000\r\n" + b"x" * 4096)
    status, headers, body = _answer(sock)
    sock.close()
    _assert_json_error(status, headers, body, 411)
    assert time.monotonic() - began < 2


def test_a_chunked_upload_still_works(backend: Backend) -> None:
    archive = make_archive(loop_experiment())

    def chunks() -> Iterator[bytes]:
        for at in range(0, len(archive), 100):
            yield archive[at:at + 100]

    response = backend.put("/v1/experiments/chunked", data=chunks(),
                           headers={"Content-Type": "application/gzip"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("raw,statuses", [
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", (431,)),
    (b"PUT /v1/experiments/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
     (413,)),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", (400,)),
])
def test_the_servers_own_errors_are_json(backend: Backend, raw: bytes, statuses) -> None:
    sock = _connect(backend)
    sock.sendall(raw)
    status, headers, body = _answer(sock)
    sock.close()
    _assert_json_error(status, headers, body, *statuses)


class _Blocking:
    """A waitress task that holds its worker until released."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.release = threading.Event()

    def service(self) -> None:
        self.running.set()
        assert self.release.wait(10)

    def cancel(self) -> None:
        pass


def test_the_dispatcher_starts_threads_as_tasks_need_them_up_to_its_most() -> None:
    def workers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("waitress-")}

    others = workers()  # of servers that other tests ran in this process, if any
    dispatcher = GrowingDispatcher(3)
    dispatcher.set_thread_count(3)  # as waitress calls it: starts nothing
    assert dispatcher.threads == set()
    tasks = [_Blocking() for _ in range(4)]
    try:
        for task in tasks[:3]:
            dispatcher.add_task(task)
        for task in tasks[:3]:
            assert task.running.wait(10)
        assert len(dispatcher.threads) == 3
        dispatcher.add_task(tasks[3])  # all three busy, and no more allowed: it waits
        assert not tasks[3].running.wait(0.2) and len(dispatcher.threads) == 3
        tasks[0].release.set()
        assert tasks[3].running.wait(10)  # the freed thread takes it
        for task in tasks[1:]:
            task.release.set()
        wait_until(lambda: dispatcher.active_count == 0, 10, "every thread idle")
        again = _Blocking()
        dispatcher.add_task(again)  # an idle thread takes it: none is started
        assert again.running.wait(10) and len(dispatcher.threads) == 3
        again.release.set()
    finally:
        for task in tasks:
            task.release.set()
        assert dispatcher.shutdown(timeout=10)
    assert dispatcher.threads == set()
    # Each has left its loop; the thread itself ends a moment later.
    wait_until(lambda: workers() <= others, 10, "the workers to end")


def _open_stream(backend: Backend) -> socket.socket:
    """An event stream on a raw socket, once the backend answered its head."""
    sock = _connect(backend)
    auth = "".join(f"{k}: {v}\r\n" for k, v in backend.auth_headers().items())
    sock.sendall(f"GET /v1/events HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    head = b""
    while b"retry:" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def test_worker_threads_are_started_as_requests_need_them(backend: Backend) -> None:
    process = psutil.Process(backend.proc.pid)
    at_start = process.num_threads()
    # 32 request workers and 256 event-stream workers are allowed (the defaults):
    # none waits idle from the start.
    assert at_start < 40, at_start
    streams = []
    try:
        for _ in range(100):  # each holds a worker while it is open
            streams.append(_open_stream(backend))
        # One worker may be there from the start (it answered the harness's /health).
        assert process.num_threads() >= at_start + 99
        assert backend.get("/health").status_code == 200
        assert backend.get("/v1/simulations").status_code == 200
    finally:
        for sock in streams:
            sock.close()
