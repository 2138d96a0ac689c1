"""The backend's client of a simulation server's control API."""
from __future__ import annotations

import threading
from typing import Any

import requests

from lifecycle.messages import ServerInfo


class ControlError(Exception):
    """The simulation server could not be reached, or refused the command."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ControlClient:
    """Talks to one simulation server over keep-alive connections.

    Commands and status share one session (under a lock); the event stream's
    long polls use their own, so a poll never holds up a command.
    """

    def __init__(self, info: ServerInfo) -> None:
        self.info = info
        self._headers = {"Authorization": f"Bearer {info.token}"}
        self._session = requests.Session()
        self._events_session = requests.Session()
        self._lock = threading.Lock()

    def status(self, timeout: float = 2.0) -> dict[str, Any]:
        with self._lock:
            return self._call(self._session, "GET", "/status", timeout=timeout)

    def command(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        with self._lock:
            return self._call(self._session, "POST", "/command", json={"command": name},
                              timeout=timeout)

    def events(self, after: int, wait: float = 20.0) -> list[dict[str, Any]]:
        reply = self._call(self._events_session, "GET", "/events",
                           params={"after": after, "wait": wait}, timeout=wait + 10.0)
        return reply["events"]

    def close(self) -> None:
        self._session.close()
        self._events_session.close()

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
