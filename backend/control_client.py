"""The backend's client of a simulation server's control API."""
from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from lifecycle.messages import ServerInfo

# Connections kept for status reads; more concurrent reads open short-lived extra ones.
_STATUS_POOL = 4
# Connections kept for forwarded NEST API calls; more concurrent calls open extra ones.
_FORWARD_POOL = 8
_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Forwarded:
    """A simulation server's answer to a forwarded request, as it sent it."""

    status: int
    content_type: str
    body: bytes


class ControlError(Exception):
    """The simulation server could not be reached, or refused the command."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ControlClient:
    """Talks to one simulation server over keep-alive connections.

    Commands, status reads and the event stream's long polls each use their own
    connections, so a status read (on any request thread) never delays a pause,
    and a long poll never holds up either. Plain ``http.client`` throughout: a
    running simulation's commands and events are the backend's busiest calls, and
    ``requests`` costs several times the CPU for each.
    """

    def __init__(self, info: ServerInfo) -> None:
        self.info = info
        self._auth = f"Bearer {info.token}"
        self._commands = _ConnectionPool(info.host, info.port, 1)
        self._command_lock = threading.Lock()
        self._events = _ConnectionPool(info.host, info.port, 1)
        self._status = _ConnectionPool(info.host, info.port, _STATUS_POOL)
        self._forward = _ConnectionPool(info.host, info.port, _FORWARD_POOL)

    def status(self, timeout: float = 2.0) -> dict[str, Any]:
        return self._call(self._status, "GET", "/status", timeout=timeout)

    def command(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        with self._command_lock:
            return self._call(self._commands, "POST", "/command", {"command": name},
                              timeout=timeout)

    def events(self, after: int, wait: float = 20.0) -> list[dict[str, Any]]:
        target = f"/events?{urlencode({'after': after, 'wait': wait})}"
        return self._call(self._events, "GET", target, timeout=wait + 10.0)["events"]

    def forward(self, method: str, target: str, body: bytes, content_type: str | None,
                timeout: float | None) -> Forwarded:
        """Send one request as it came (``target``: path and query) on a connection of
        its own, so a call that lasts (a ``Simulate``) holds up neither commands, status
        reads nor other calls; return the answer unchanged. ``timeout``: s to wait for
        the answer (None: as long as it takes; the server's exit ends the wait).

        Raises:
            ControlError: the server could not be reached or gave no answer in time.
        """
        headers = {"Authorization": self._auth, "Content-Length": str(len(body))}
        if content_type:
            headers["Content-Type"] = content_type
        return self._forward.request(method, target, body, headers, timeout)

    def close(self) -> None:
        for pool in (self._forward, self._commands, self._events, self._status):
            pool.close()

    def _call(self, pool: _ConnectionPool, method: str, target: str,
              payload: dict[str, Any] | None = None, *, timeout: float) -> dict[str, Any]:
        body = json.dumps(payload).encode() if payload is not None else b""
        headers = {"Authorization": self._auth, "Content-Length": str(len(body))}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        answer = pool.request(method, target, body, headers, timeout)
        try:
            reply = json.loads(answer.body)
        except ValueError:
            raise ControlError(f"bad reply from simulation server ({answer.status})",
                               answer.status) from None
        if answer.status != 200:
            error = reply.get("error") if isinstance(reply, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            raise ControlError(message or http.client.responses.get(answer.status, "error"),
                               answer.status)
        return reply


class _ConnectionPool:
    """Keep-alive ``http.client`` connections to one server, one request at a time each.

    Plain ``http.client``, not ``requests``: a forwarded call is bytes in, bytes out, and
    the hop should cost the least it can.
    """

    def __init__(self, host: str, port: int, keep: int) -> None:
        self.host, self.port, self.keep = host, port, keep
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue()
        self._closed = False

    def request(self, method: str, target: str, body: bytes, headers: dict[str, str],
                timeout: float | None) -> Forwarded:
        reused = True
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn, reused = self._connect(), False
        try:
            answer = self._exchange(conn, method, target, body, headers, timeout)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) \
                as exc:
            conn.close()
            if not reused:
                raise ControlError(f"simulation server unreachable: {exc}") from exc
            # A kept connection the server had closed: nothing was read, send it afresh.
            conn = self._connect()
            answer = self._guarded(conn, method, target, body, headers, timeout)
        except TimeoutError as exc:
            conn.close()
            raise ControlError(f"the simulation server gave no answer within {timeout:g} s",
                               504) from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ControlError(f"simulation server unreachable: {exc}") from exc
        self._release(conn)
        return answer

    def _guarded(self, conn: http.client.HTTPConnection, *args: Any) -> Forwarded:
        try:
            return self._exchange(conn, *args)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ControlError(f"simulation server unreachable: {exc}") from exc

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=_CONNECT_TIMEOUT)
        try:
            conn.connect()
        except OSError as exc:
            raise ControlError(f"simulation server unreachable: {exc}") from exc
        # Headers and body leave in one write, but the next request must not wait for
        # the ACK of the last one (Nagle with delayed ACKs: ~40 ms).
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    @staticmethod
    def _exchange(conn: http.client.HTTPConnection, method: str, target: str, body: bytes,
                  headers: dict[str, str], timeout: float | None) -> Forwarded:
        conn.sock.settimeout(_CONNECT_TIMEOUT)
        conn.request(method, target, body=body, headers=headers)
        conn.sock.settimeout(timeout)
        response = conn.getresponse()
        data = response.read()
        if response.will_close:
            conn.close()
        return Forwarded(response.status, response.getheader("Content-Type", ""), data)

    def _release(self, conn: http.client.HTTPConnection) -> None:
        if conn.sock is None or self._closed or self._idle.qsize() >= self.keep:
            conn.close()
        else:
            self._idle.put(conn)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
