"""The NEST Server API over HTTP: request bytes to :func:`simserver.nest_api.handle` and back.

Two users: the control API serves it under ``/nest/`` (its bearer token guards it, and
the backend forwards ``/v1/simulations/<id>/nest/...`` there byte for byte), and
:class:`NestHTTPServer` serves it at its root, for tests and a session run by hand
(``nest-client`` pointed at it works unchanged).

Bodies are read as NEST Server (Flask) reads them: JSON when the Content-Type is
``application/json`` (or ``+json``), a form when it is ``x-www-form-urlencoded``,
ignored otherwise.
"""
from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from simserver.nest_api import NestApiError, dumps, error_payload, handle
from simserver.nest_session import NestSession

logger = logging.getLogger(__name__)

#: Scripts and long node lists are larger than control commands.
MAX_BODY = 16 * 1024 * 1024


def parse_body(content_type: str, raw: bytes) -> tuple[Any, dict[str, list[str]]]:
    """``(json_body, form)`` of a request body.

    Raises:
        NestApiError: 400 ``bad_json`` when a JSON body does not parse.
    """
    mimetype = content_type.split(";", 1)[0].strip().lower()
    if mimetype == "application/json" or (mimetype.startswith("application/")
                                          and mimetype.endswith("+json")):
        if not raw.strip():
            return None, {}
        try:
            return json.loads(raw), {}
        except ValueError as exc:
            raise NestApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from exc
    if mimetype == "application/x-www-form-urlencoded":
        return None, parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return None, {}


def answer(session: NestSession, method: str, target: str, content_type: str,
           raw: bytes) -> tuple[int, bytes]:
    """The status and JSON bytes for one request; ``target`` is path and query below
    the NEST root (``/api/Create?inspect=getdoc``)."""
    url = urlsplit(target)
    try:
        body, form = parse_body(content_type, raw)
    except NestApiError as exc:
        status, payload = exc.reply()
    else:
        status, payload = handle(session, method, url.path, parse_qs(url.query), body, form)
    return status, dumps(payload)


def serve_request(handler: BaseHTTPRequestHandler, session: NestSession, target: str) -> None:
    """Read the request ``handler`` holds, answer it, write the reply."""
    raw = read_body(handler)
    if raw is None:
        return
    status, data = answer(session, handler.command, target,
                          handler.headers.get("Content-Type", ""), raw)
    write_reply(handler, status, data)


def read_body(handler: BaseHTTPRequestHandler) -> bytes | None:
    """The body, or None after answering 400/413 (a bad or too large Content-Length)."""
    length = handler.headers.get("Content-Length") or "0"
    if not length.isdigit() or int(length) > MAX_BODY:
        handler.close_connection = True
        bad = not length.isdigit()
        write_reply(handler, 400 if bad else 413, dumps(error_payload(
            "bad_request" if bad else "too_large",
            "bad Content-Length" if bad else f"the body is larger than {MAX_BODY} bytes")))
        return None
    return handler.rfile.read(int(length))


def write_reply(handler: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class NestHTTPServer(ThreadingHTTPServer):
    """The NEST Server API of ``session`` at the root of ``http://host:port``.

    With a ``token``, requests must carry ``Authorization: Bearer <token>`` or NEST
    Server's own ``NESTServerAuth: <token>`` header (compared in constant time).
    """

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, session: NestSession, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None) -> None:
        super().__init__((host, port), _Handler)
        self.session = session
        self.token = token.encode() if token else None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="nest-http", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the body would
    # wait for the peer's delayed ACK (~40 ms) on every keep-alive request.
    disable_nagle_algorithm = True
    server: NestHTTPServer

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _serve(self) -> None:
        if not self._authorized():
            read_body(self)
            write_reply(self, 401, dumps(error_payload(
                "unauthorized", "a valid token is required (Authorization: Bearer <token> "
                "or NESTServerAuth: <token>)")))
            return
        serve_request(self, self.server.session, self.path)

    def _authorized(self) -> bool:
        expected = self.server.token
        if expected is None:
            return True
        scheme, _, bearer = self.headers.get("Authorization", "").partition(" ")
        offered = bearer if scheme == "Bearer" else self.headers.get("NESTServerAuth", "")
        return hmac.compare_digest(offered.encode(), expected)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("nest http: " + format, *args)


#: Environment variable holding the token of a standalone server (never the command
#: line: that is world-readable in ``ps``).
TOKEN_ENV = "SIMSERVER_NEST_TOKEN"


def main(argv: list[str] | None = None) -> int:
    """``python -m simserver.nest_http``: one NEST session served over HTTP until SIGTERM.

    Prints ``listening: <url>`` once it serves. NEST is imported and driven by the main
    thread (see :mod:`simserver.nest_session`); HTTP requests arrive on other threads.
    """
    import argparse
    import os
    import signal
    import sys
    from pathlib import Path

    from simserver.errors import SimulationStopped
    from simserver.nest_engine import import_nest

    parser = argparse.ArgumentParser(prog="python -m simserver.nest_http",
                                     description="Serve the NEST Server API of a NEST session.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--chunk", type=float, default=10.0,
                        help="simulated ms per Run at first (adapts to a 0.2 s wall budget)")
    parser.add_argument("--results-dir", type=Path,
                        help="save the spike recorders' events to spikes.npz here at the end")
    args = parser.parse_args(argv)
    session = NestSession(import_nest(), chunk=args.chunk)
    server = NestHTTPServer(session, args.host, args.port, os.environ.pop(TOKEN_ENV, None))
    server.serve_in_thread()
    signal.signal(signal.SIGTERM, lambda signum, frame: session.stop())
    print(f"listening: {server.url}", flush=True)
    try:
        session.serve()
    except (SimulationStopped, KeyboardInterrupt):
        pass
    finally:
        server.shutdown()
        if args.results_dir is not None:
            session.save_spikes(args.results_dir)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
