"""Test support: the real NEST Server and our NEST session server, each a loopback process.

:class:`RealNestServer` runs NEST Server 3.10 as NEST ships it, ``gunicorn
nest.server:app`` with one sync worker (the wheel's ``nest-server`` script runs the
same), with a fresh access token, ``/exec`` enabled and RestrictedPython off: the mode
whose ``/exec`` our NEST session reproduces. :class:`SessionServer` runs
``python -m simserver.nest_http``. Both take the token in NEST Server's
``NESTServerAuth`` header, live in a process group of their own, and are stopped by
PID (group SIGTERM, then SIGKILL) at teardown.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.support import ROOT, free_port, wait_until

START_SECONDS = 60
STOP_GRACE = 5.0


class LoopbackServer:
    """A server process on 127.0.0.1 that answers ``GET /`` once it is ready."""

    name = "server"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.token = secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.http = requests.Session()
        self.http.trust_env = False           # no proxy for loopback
        self.http.headers["NESTServerAuth"] = self.token

    @property
    def headers(self) -> dict[str, str]:
        """What a ``nest_client.NESTClient`` needs to pass (its ``headers``)."""
        return {"NESTServerAuth": self.token}

    def command(self, port: int) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYNEST_QUIET": "1", "NO_PROXY": "127.0.0.1,localhost"}

    def start(self) -> LoopbackServer:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(port), cwd=self.log_path.parent,
                                         env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_until(self._ready, START_SECONDS, f"{self.name} to answer GET /")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
        try:
            return self.http.get(self.url + "/", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        if body is not None:
            kwargs["json"] = body
        return self.http.request(method, self.url + path, timeout=60, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after the grace."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self.http.close()
        try:
            members = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)]
        except psutil.NoSuchProcess:
            members = []
        _signal_group(proc.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(members, timeout=STOP_GRACE)
        if alive or proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL)
        proc.wait(STOP_GRACE)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)   # start_new_session: the group id is the server's pid
    except ProcessLookupError:
        pass


class RealNestServer(LoopbackServer):
    name = "NEST Server"

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "nest.server:app",
                "--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", "120",
                # gunicorn 27's control socket is one path per user: servers of parallel
                # test runs would fight over it.
                "--no-control-socket"]

    def env(self) -> dict[str, str]:
        return {**super().env(), "NEST_SERVER_ACCESS_TOKEN": self.token,
                "NEST_SERVER_ENABLE_EXEC_CALL": "1", "NEST_SERVER_DISABLE_RESTRICTION": "1",
                "PYTHONPATH": str(ROOT)}


class SessionServer(LoopbackServer):
    name = "NEST session server"

    def __init__(self, log_path: Path, *args: str) -> None:
        super().__init__(log_path)
        self.args = list(args)

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "simserver.nest_http", "--port", str(port), *self.args]

    def env(self) -> dict[str, str]:
        return {**super().env(), "SIMSERVER_NEST_TOKEN": self.token,
                "PYTHONPATH": str(ROOT)}
