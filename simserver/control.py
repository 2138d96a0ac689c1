"""The control API of a simulation server: a small authenticated HTTP server.

Routes (JSON; every request carries ``Authorization: Bearer <token>``):

- ``GET /status``: the live status.
- ``POST /command`` ``{"command": "start"|"resume"|"pause"|"stop"}``: obey and answer
  ``{"state", "seq"}`` (``seq``: the number of the event this change appended, so the
  backend can tell older events from the reply); 409 if the lifecycle refuses.
- ``GET /events?after=N&wait=S``: events numbered above N, long-polling up to S s.
- ``GET|POST /nest/...``: the NEST Server API of a NEST session (``/nest/``,
  ``/nest/api``, ``/nest/api/<call>``, ``/nest/exec``; see :mod:`simserver.nest_api`),
  404 ``no_nest_session`` when the simulation is not one.
"""
from __future__ import annotations

import hmac
import json
import logging
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from lifecycle import LifecycleError
from simserver.events import EventLog

logger = logging.getLogger(__name__)

_MAX_BODY = 64 * 1024
_MAX_WAIT = 60.0
_NEST_PREFIX = "/nest"


def _is_nest(path: str) -> bool:
    return path == _NEST_PREFIX or path.startswith(_NEST_PREFIX + "/")


class Controlled(Protocol):
    """What the control API drives (the simulation server).

    A NEST session's server also has ``nest_session`` (a ``NestSession``), which the
    ``/nest/`` routes answer from.
    """

    events: EventLog

    def status(self) -> dict[str, Any]: ...
    def command(self, name: str) -> dict[str, Any]: ...
    def attend(self, change: int) -> None: ...


class ControlServer(ThreadingHTTPServer):
    daemon_threads = True
    # Many quick connections may arrive at once (status polls, commands).
    request_queue_size = 64

    def __init__(self, host: str, token: str, target: Controlled) -> None:
        super().__init__((host, 0), _Handler)
        self.token = token.encode()
        self.target = target

    def server_bind(self) -> None:
        # HTTPServer's own looks the host's name up (socket.getfqdn) for a name nothing
        # here uses: the first lookup in a process loads the resolver, ~1.6 ms of every
        # server's start.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def port(self) -> int:
        return self.server_address[1]

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="control-api", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # With Nagle's algorithm a reply's second segment would wait for the peer's delayed
    # ACK (~40 ms) on every keep-alive request.
    disable_nagle_algorithm = True
    # Headers and body go out in one write, when the request is done: a write releases
    # the GIL, and taking it back waits for the script's thread, which holds it through
    # a whole NEST Run (measured ~1.2 ms each; one write less per request).
    wbufsize = 64 * 1024
    server: ControlServer
    _attended = False

    # A request is counted from its request line to its reply's flush (not while a
    # connection is kept alive, nor while /events waits), so that the run loop steps one
    # at a time meanwhile (RunLoop.attending): every socket call of this thread gives up
    # the GIL, and NEST holds it through a Run; its waits to take it back are then one
    # step long, not a chunk.

    def parse_request(self) -> bool:
        self._attend(True)
        return super().parse_request()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            self._attend(False)

    def _attend(self, attended: bool) -> None:
        if attended != self._attended:
            self._attended = attended
            self.server.target.attend(1 if attended else -1)

    def do_GET(self) -> None:
        if not self._authorized():
            return
        url = urlsplit(self.path)
        if _is_nest(url.path):
            self._nest()
        elif url.path == "/status":
            self._reply(200, self.server.target.status())
        elif url.path == "/events":
            query = parse_qs(url.query)
            try:
                after = int(query.get("after", ["0"])[0])
                wait = min(max(float(query.get("wait", ["0"])[0]), 0.0), _MAX_WAIT)
            except ValueError:
                self._error(400, "bad_request", "'after' and 'wait' must be numbers")
                return
            self._attend(False)
            events = self.server.target.events.after(after, wait)
            self._attend(True)
            self._reply(200, {"events": events})
        else:
            self._error(404, "not_found", f"no route {url.path}")

    def do_POST(self) -> None:
        if not self._authorized():
            return
        if _is_nest(urlsplit(self.path).path):
            self._nest()
            return
        if urlsplit(self.path).path != "/command":
            self._error(404, "not_found", f"no route {self.path}")
            return
        body = self._read_json()
        if body is None:
            return
        name = body.get("command") if isinstance(body, dict) else None
        try:
            self._reply(200, self.server.target.command(name))
        except LifecycleError as exc:
            self._error(409, "invalid_transition", str(exc))
        except ValueError as exc:
            self._error(400, "bad_request", str(exc))

    def _nest(self) -> None:
        # Imported here: simulations that are no NEST session never load the NEST API.
        from simserver.nest_http import serve_request

        session = getattr(self.server.target, "nest_session", None)
        if session is None:
            self._discard_body()
            self._error(404, "no_nest_session", "this simulation is not a NEST session")
            return
        serve_request(self, session, self.path[len(_NEST_PREFIX):] or "/")

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme == "Bearer" and hmac.compare_digest(token.encode(), self.server.token):
            return True
        self._discard_body()
        self._error(401, "unauthorized", "a valid bearer token is required")
        return False

    def _content_length(self) -> int | None:
        raw = self.headers.get("Content-Length") or "0"
        return int(raw) if raw.isdigit() else None

    def _read_json(self) -> Any:
        length = self._content_length()
        if length is None:
            self.close_connection = True
            self._error(400, "bad_request", "bad Content-Length")
            return None
        if length > _MAX_BODY:
            self.close_connection = True
            self._error(413, "too_large", "body too large")
            return None
        try:
            return json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._error(400, "bad_json", "the body is not valid JSON")
            return None

    def _discard_body(self) -> None:
        length = self._content_length()
        if length is not None and length <= _MAX_BODY:
            self.rfile.read(length)
        else:
            self.close_connection = True

    def _error(self, status: int, code: str, message: str) -> None:
        self._reply(status, {"error": {"code": code, "message": message}})

    def _reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("control: " + format, *args)
