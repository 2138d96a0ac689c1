"""The launcher seam: where and how simulation-server processes run.

Everything the backend does to a simulation server as a process goes through a
:class:`Launcher` and the :class:`ServerHandle` it returns: spawn, find the address
of its control API, learn that it exited and how, stop it with escalation, clean up
what it left, adopt it again after a backend restart. Nothing outside this package
assumes the server is a local pid: a launcher may run it locally, take it from a
pool of warm processes, or submit it to a batch system.
"""
from __future__ import annotations

import abc
import json
import os
import signal
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lifecycle
from backend.launchers.environment import allowed_environment, thread_defaults
from lifecycle.messages import SERVER_FILE, TOKEN_ENV, ServerInfo
from storage.tree import read_regular

# simserver sits beside lifecycle in the distribution; the server must find both.
_CODE_ROOT = str(Path(lifecycle.__file__).resolve().parent.parent)
#: The run dir's own JSON files (``run.json``, ``server.json``) are a few hundred bytes.
_MAX_RUN_FILE_BYTES = 1024 * 1024


def server_command(run_dir: Path, python: str = "") -> list[str]:
    """The command line of a simulation server (it carries no secret)."""
    return [python or sys.executable, "-m", "simserver", "--run-dir", str(run_dir)]


def server_environment(token: str, environ: Mapping[str, str] | None = None,
                       extra: Iterable[str] = ()) -> dict[str, str]:
    """What a simulation server's environment is: the allowed names of ``environ``
    (default: the backend's; see :mod:`backend.launchers.environment`) and ``extra``,
    one thread per thread pool unless they set a count, the control token, and the code
    on ``PYTHONPATH``."""
    env = allowed_environment(os.environ if environ is None else environ, extra)
    env.update(thread_defaults(env))
    env[TOKEN_ENV] = token
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_CODE_ROOT, env.get("PYTHONPATH", "")) if p)
    return env


def file_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a (log) file, "" if it cannot be read (or is not a
    regular file: the script may have put a FIFO in its place)."""
    try:
        text = read_regular(path.parent, path.name, 16384, tail=True).decode(
            "utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


@dataclass(frozen=True)
class Exit:
    """How a server ended: ``code`` for an exit, ``signal`` when killed by one.

    Both None when nobody can tell (an adopted process is not our child). A
    launcher that knows more (a batch system's verdict) says so in ``reason`` and
    a typed ``error_type``.
    """

    code: int | None
    signal: int | None
    reason: str | None = None
    error_type: str | None = None

    @property
    def signal_name(self) -> str | None:
        if self.signal is None:
            return None
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"

    def describe(self) -> str:
        if self.reason:
            return self.reason
        if self.signal is not None:
            return f"killed by {self.signal_name}"
        if self.code is not None:
            return f"exit code {self.code}"
        return "exit status unknown"


@dataclass(frozen=True)
class LaunchSpec:
    """What a launcher needs to start one simulation server."""

    sim_id: str
    run_dir: Path
    #: The control token; handed over out of band (environment), never on a command line.
    token: str
    #: The run's resolved limits (``backend.limits.Limits.to_dict()``).
    limits: dict[str, Any]


#: Called once with the handle and its exit, on a thread of the launcher's.
ExitCallback = Callable[["ServerHandle", Exit], None]


class ServerHandle(abc.ABC):
    """One launched simulation server, wherever it runs.

    ``exited`` is set, and the ``on_exit`` callback given to the launcher called
    once, when the server is gone for good.
    """

    def __init__(self, sim_id: str, on_exit: ExitCallback) -> None:
        self.sim_id = sim_id
        self.exit: Exit | None = None
        self.exited = threading.Event()
        self._on_exit = on_exit

    def _ended(self, exit: Exit) -> None:
        """Record how the server ended and tell the supervisor (once)."""
        if self.exited.is_set():
            return
        self.exit = exit
        self.exited.set()
        self._on_exit(self, exit)

    @abc.abstractmethod
    def describe(self) -> str:
        """Where it runs, for logs and errors: ``pid 123``, ``slurm job 45``."""

    @abc.abstractmethod
    def resources(self) -> dict[str, float]:
        """``cpu_percent`` (since the last call) and ``rss_bytes`` of all it runs."""

    def details(self) -> dict[str, Any]:
        """What the launcher knows of it, for ``GET .../status`` (``launcher``); {} for
        nothing worth saying."""
        return {}

    def queued(self) -> bool:
        """True while it waits for resources (a batch queue) and has not started: the
        start timeout counts from when it leaves the queue."""
        return False


def read_run_json(run_dir: Path, name: str) -> Any | None:
    """The JSON of the file ``name`` of ``run_dir`` (``run.json``, ``server.json``, a
    launcher's own); None if it is missing, is no regular file (the script, which can
    write there, may have put a FIFO or a link in its place), is over
    :data:`_MAX_RUN_FILE_BYTES` or is not JSON."""
    try:
        raw = read_regular(run_dir, name, _MAX_RUN_FILE_BYTES)
        return json.loads(raw) if len(raw) <= _MAX_RUN_FILE_BYTES else None
    except (OSError, ValueError):
        return None


def read_server_info(run_dir: Path) -> ServerInfo | None:
    """The ``server.json`` of ``run_dir``; None if there is none yet, or none of the
    server's shape (being written by a foreign writer, not atomically; or written by
    the script, which runs as the server)."""
    data = read_run_json(run_dir, SERVER_FILE)
    try:
        return ServerInfo.from_dict(data) if data else None
    except (ValueError, KeyError, TypeError, OverflowError):
        return None


class Launcher(abc.ABC):
    """Starts simulation servers and ends them, escalating when they do not obey."""

    #: The name ``--launcher`` selects it by.
    name = ""
    #: ``RunConfig.host``: where the server binds its control API (loopback for a
    #: server on this host; ``NODE_HOST`` for its node's address).
    bind_host = "127.0.0.1"

    @abc.abstractmethod
    def spawn(self, spec: LaunchSpec, on_exit: ExitCallback) -> ServerHandle:
        """Start ``python -m simserver`` for a prepared run directory.

        Raises:
            OSError: it could not be started.
        """

    def reserve(self, sim_id: str, config: dict[str, Any]) -> None:  # noqa: B027 - a hook
        """Get ready to spawn ``sim_id``, whose experiment is expected to have this
        ``experiment.json`` (it is being fetched meanwhile): a warm pool sets a server
        aside and starts moving it into the run's boundary. Returns at once. A hint:
        :meth:`spawn` checks what it is given and may still start another server.
        Either :meth:`spawn` or :meth:`release` follows. Nothing by default."""

    def release(self, sim_id: str) -> None:  # noqa: B027 - a hook, as reserve
        """Give back what :meth:`reserve` set aside for ``sim_id``: no spawn follows
        (the fetch failed, a stop came). Idempotent."""

    def launched(self, sim_id: str) -> None:  # noqa: B027 - a hook, as reserve
        """The launch of ``sim_id`` is over: its server has built its kernel, or the
        launch ended without (failed, stopped). Called once per launch, after
        :meth:`reserve` and :meth:`spawn` or :meth:`release`. Nothing by default."""

    @abc.abstractmethod
    def adopt(self, sim_id: str, run_dir: Path, on_exit: ExitCallback) -> ServerHandle | None:
        """Attach to a live server an earlier backend started; None if it is gone.

        Must never mistake another process (a recycled pid) for it.
        """

    def server_info(self, run_dir: Path) -> ServerInfo | None:
        """How to reach the server's control API, once it listens (``server.json``)."""
        return read_server_info(run_dir)

    @abc.abstractmethod
    def terminate(self, handle: ServerHandle, grace: float) -> None:
        """Ask the server and all it started to end (SIGTERM or the like); force it
        (SIGKILL) after ``grace`` seconds. Returns once it is gone."""

    @abc.abstractmethod
    def kill_leftovers(self, handle: ServerHandle) -> None:
        """Kill whatever the script left behind once the server itself is gone."""

    @abc.abstractmethod
    def clean_orphans(self, runs_dir: Path, owned: dict[str, ServerHandle]) -> None:
        """Kill servers of run dirs under ``runs_dir`` that no handle in ``owned`` is."""

    def facts(self) -> dict[str, Any]:
        """What ``GET /`` tells of the launcher: its name, how it holds runs."""
        return {"name": self.name}

    def problem(self, runs_dir: Path) -> str | None:
        """Why no server could be launched now (readiness), or None."""
        return None

    def pool(self) -> dict[str, dict[str, int]]:
        """Warm servers by kind (``idle``, ``starting``, ``size``), for ``GET /``; {}
        for a launcher without a pool."""
        return {}

    def reserved_memory_mb(self) -> float:
        """MiB of the host the launcher holds for itself (warm servers), taken from
        the capacity runs are admitted against."""
        return 0.0

    def close(self) -> None:  # noqa: B027 - a hook: most launchers hold nothing
        """Release what the launcher holds (threads, pools); servers live on."""
