"""The backend's client of a simulation server's control API."""
from __future__ import annotations

import queue
import threading
from typing import Any

import requests

from lifecycle.messages import ServerInfo

# Sessions kept for status reads; more concurrent reads open short-lived extra ones.
_STATUS_POOL = 4


class ControlError(Exception):
    """The simulation server could not be reached, or refused the command."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ControlClient:
    """Talks to one simulation server over keep-alive connections.

    Commands, status reads and the event stream's long polls each use their own
    connections, so a status read (on any request thread) never delays a pause,
    and a long poll never holds up either.
    """

    def __init__(self, info: ServerInfo) -> None:
        self.info = info
        self._headers = {"Authorization": f"Bearer {info.token}"}
        self._command_session = requests.Session()
        self._command_lock = threading.Lock()
        self._events_session = requests.Session()
        self._status_sessions: queue.LifoQueue[requests.Session] = queue.LifoQueue()

    def status(self, timeout: float = 2.0) -> dict[str, Any]:
        try:
            session = self._status_sessions.get_nowait()
        except queue.Empty:
            session = requests.Session()
        try:
            return self._call(session, "GET", "/status", timeout=timeout)
        finally:
            if self._status_sessions.qsize() < _STATUS_POOL:
                self._status_sessions.put(session)
            else:
                session.close()

    def command(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        with self._command_lock:
            return self._call(self._command_session, "POST", "/command",
                              json={"command": name}, timeout=timeout)

    def events(self, after: int, wait: float = 20.0) -> list[dict[str, Any]]:
        reply = self._call(self._events_session, "GET", "/events",
                           params={"after": after, "wait": wait}, timeout=wait + 10.0)
        return reply["events"]

    def close(self) -> None:
        self._command_session.close()
        self._events_session.close()
        while True:
            try:
                self._status_sessions.get_nowait().close()
            except queue.Empty:
                return

    def _call(self, session: requests.Session, method: str, path: str,
              **kwargs: Any) -> dict[str, Any]:
        try:
            response = session.request(method, self.info.url + path, headers=self._headers,
                                       **kwargs)
        except requests.RequestException as exc:
            raise ControlError(f"simulation server unreachable: {exc}") from exc
        try:
            payload = response.json()
        except ValueError:
            raise ControlError(f"bad reply from simulation server ({response.status_code})",
                               response.status_code) from None
        if response.status_code != 200:
            message = payload.get("error", {}).get("message", response.reason)
            raise ControlError(message, response.status_code)
        return payload
