"""The control client: a slow status read never delays a command."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from backend.control_client import ControlClient
from backend.launchers.base import read_server_info
from lifecycle.messages import ServerInfo
from tests.support import wait_until


class _Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    #: Status reads the server has begun to answer (the test's cue that they are in flight).
    reads_in_flight: list[int] = []

    def _reply(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.reads_in_flight.append(1)
        time.sleep(0.8)  # a status read stuck behind a busy interpreter
        self._reply({"state": "started"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._reply({"state": "paused", "seq": 3})

    def log_message(self, *args: object) -> None:
        pass


def test_a_command_is_not_held_up_by_status_reads_in_flight() -> None:
    _Slow.reads_in_flight.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = ControlClient(ServerInfo(pid=1, create_time=0.0, host="127.0.0.1",
                                      port=server.server_address[1], token="t"))
    try:
        readers = [threading.Thread(target=client.status) for _ in range(6)]
        for reader in readers:
            reader.start()
        wait_until(lambda: len(_Slow.reads_in_flight) == len(readers), 5,
                   "the status reads to reach the server")
        began = time.monotonic()
        assert client.command("pause") == {"state": "paused", "seq": 3}
        assert time.monotonic() - began < 0.4, "the command waited for the status reads"
        for reader in readers:
            reader.join(5)
    finally:
        client.close()
        server.shutdown()
        server.server_close()


def test_a_server_file_of_another_shape_names_no_server(tmp_path: Path) -> None:
    good = {"pid": 12, "create_time": 1.5, "host": "127.0.0.1", "port": 8000, "token": "t"}
    (tmp_path / "server.json").write_text(json.dumps(good))
    assert read_server_info(tmp_path) == ServerInfo(**good)
    for wrong in ({"pid": "x"}, {"port": 99999}, {"port": 0}, {"pid": -1}, {"host": ""},
                  {"token": ""}, {"create_time": None}, {"token": None, "host": None},
                  {"create_time": 10 ** 400}):
        (tmp_path / "server.json").write_text(json.dumps({**good, **wrong}))
        assert read_server_info(tmp_path) is None, wrong
    for text in ("[1]", '"x"', "{", '{"pid": 1}'):
        (tmp_path / "server.json").write_text(text)
        assert read_server_info(tmp_path) is None, text
