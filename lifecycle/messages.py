"""Message shapes the backend and the simulation server share.

The backend knows a simulation server only as a process, its control API and the
files it leaves in the run directory; every shape crossing that line is defined
here, once, so neither side imports the other.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lifecycle.states import SimState

#: Files in a run directory ``<data_dir>/runs/<sim_id>/``.
RUN_CONFIG_FILE = "run.json"        # written by the backend before spawning
SERVER_FILE = "server.json"         # written by the simulation server once it listens
STATUS_FILE = "status.json"         # the simulation server's durable state
EXPERIMENT_DIR = "experiment"
LOGS_DIR = "logs"
RESULTS_DIR = "results"

#: Log files every run has.
SIMULATION_LOG = "simulation.log"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"

#: Environment variable through which the backend hands the control token over
#: (never the command line: that is world-readable in ``ps``).
TOKEN_ENV = "SIMSERVER_TOKEN"

#: ``RunConfig.host`` asking the simulation server to bind its control API to the
#: address of its node's hostname (a server launched on another host, e.g. by Slurm).
NODE_HOST = "@node"

#: Commands the control API takes (``POST /command``) and the state each leads to.
COMMAND_TARGETS: dict[str, SimState] = {
    "start": SimState.STARTED, "resume": SimState.STARTED,
    "pause": SimState.PAUSED, "stop": SimState.STOPPED,
}


def next_command(server: SimState | None, wanted: SimState) -> str | None:
    """The command that brings a simulation server in ``server`` state one edge closer
    to the state the backend's lifecycle is in (``wanted``); None when there is none.

    A run paused before its server was ready is started, then paused: the server's
    lifecycle has no edge from initialized to paused.
    """
    if wanted == SimState.STARTED:
        return {SimState.INITIALIZED: "start", SimState.PAUSED: "resume"}.get(server)
    if wanted == SimState.PAUSED:
        return {SimState.INITIALIZED: "start", SimState.STARTED: "pause"}.get(server)
    return None

#: Exit codes of ``python -m simserver``.
EXIT_OK = 0          # completed or stopped
EXIT_FAILED = 3      # the simulation failed (script, kernel or experiment error)
EXIT_USAGE = 2       # bad invocation


@dataclass
class RunConfig:
    """What the backend asks a simulation server to run (``run.json``)."""

    sim_id: str
    experiment: str
    main_script: str
    params: dict[str, Any] = field(default_factory=dict)
    timeout: dict[str, float] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    #: Address the control API binds to; ``NODE_HOST``: the node's own address.
    host: str = "127.0.0.1"
    #: ``token_digest`` of the launch's control token: a simulation server whose
    #: token does not match belongs to another launch of this run dir and must leave.
    token_sha256: str = ""
    #: The backend wanted the run started when it launched it: start once initialized,
    #: without waiting for the start command (one round trip less before the first
    #: step; the backend's commands still converge it to what it wants since).
    start: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class ServerInfo:
    """How to reach a live simulation server (``server.json``, mode 0600)."""

    pid: int
    create_time: float
    host: str
    port: int
    token: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerInfo:
        """Raises:
            ValueError, KeyError, TypeError, OverflowError: not the shape a server
            writes."""
        info = cls(pid=int(data["pid"]), create_time=float(data["create_time"]),
                   host=data["host"], port=int(data["port"]), token=data["token"])
        if info.pid <= 0 or not 0 < info.port < 65536 or not (
                isinstance(info.host, str) and isinstance(info.token, str)
                and info.host and info.token):
            raise ValueError(f"not a server's address: {data!r:.200}")
        return info


#: Kinds of warm simulation servers (``python -m simserver --warm KIND``): ``nest`` has
#: imported NEST as well, ``python`` only the simulation server and NumPy.
WARM_KINDS = ("nest", "python")
#: The line a warm simulation server writes on its stdout (a pipe to the backend's
#: pool) once it is warm.
WARM_READY = b"warm\n"
#: The line a forked warm server writes after :data:`WARM_READY` once it has copied its
#: pages (:func:`simserver.forks.own_memory`): from then on it takes no CPU while idle.
WARM_QUIET = b"quiet\n"


@dataclass
class Handoff:
    """The one run a warm simulation server is handed: written to its stdin, a pipe
    only the backend's pool holds the other end of, and closed (never the command
    line, never a file). It then runs as ``python -m simserver --run-dir RUN_DIR``
    started in ``cwd`` with ``env``, its stdout and stderr appended to the two logs."""

    run_dir: str
    cwd: str
    env: dict[str, str]
    token: str
    stdout: str
    stderr: str
    #: The run's resolved limits (also in ``run.json``).
    limits: dict[str, Any] = field(default_factory=dict)
    #: The ``cgroup.procs`` of the run's cgroup, which the backend moves the process
    #: into while it starts: it runs no code of the run before it is listed there.
    #: "" when there is nothing to wait for (the marker boundary).
    boundary: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Handoff:
        """Raises: ValueError: not a handoff."""
        try:
            fields = json.loads(data)
            return cls(**{k: fields[k] for k in cls.__dataclass_fields__ if k in fields})
        except (TypeError, KeyError) as exc:
            raise ValueError(f"not a handoff: {exc}") from None


def token_digest(token: str) -> str:
    """What ``run.json`` records of a launch's control token (never the token)."""
    return hashlib.sha256(token.encode()).hexdigest()


def read_json(path: Path) -> Any | None:
    """Return the JSON in ``path``, or None if it does not exist (yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
