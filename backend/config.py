"""Configuration: defaults, overridden by ``SIMBACKEND_*`` variables, then by flags."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from backend.launchers.boundary import MODES
from client.settings import default_data_dir, is_loopback
from storage import CONNECT_TIMEOUT, READ_TIMEOUT, RETRIES

#: Values of ``Config.launcher``.
LAUNCHERS = ("local", "slurm")


@dataclass
class Config:
    """Everything the backend can be told. Each field has an env var
    ``SIMBACKEND_<NAME>`` and a ``simbackend serve --<name>`` flag."""

    host: str = "127.0.0.1"
    port: int = 8642
    data_dir: Path = field(default_factory=default_data_dir)
    #: ``file:///path`` or ``s3://bucket/prefix``; default ``file://<data_dir>/storage``.
    storage: str = ""
    #: Folder of example experiments put into storage at start-up when missing
    #: (empty: none).
    examples_dir: str = ""
    #: Worker threads of the WSGI server.
    threads: int = 32
    #: Open connections the server holds at most; at the limit the one idle the longest
    #: is closed to admit a new one (see :mod:`backend.wsgi_server`).
    connection_limit: int = 500
    #: Seconds a connection may stay idle (no bytes, no request being served) before
    #: it is closed.
    channel_timeout: float = 30.0
    #: Largest request line plus headers, in bytes (431 above).
    max_header_bytes: int = 64 * 1024
    #: Seconds a stopped simulation gets to end by itself before SIGTERM, and
    #: again after SIGTERM before SIGKILL.
    stop_grace: float = 10.0
    #: Seconds a simulation server has to become ready before it is failed
    #: (default; ``limits.start_timeout`` in POST or experiment.json overrides).
    start_timeout: float = 120.0
    #: Default real-time timeout in seconds of running wall time (0: none);
    #: ``timeout.real_time`` in POST or experiment.json overrides it.
    real_time_limit: float = 0.0
    #: Default memory limit in MiB for a simulation's process tree (0: none);
    #: ``limits.memory_mb`` in POST or experiment.json overrides it.
    memory_limit_mb: float = 0.0
    #: Most simulations holding a process at once (initialized, started, paused);
    #: requests beyond it are queued (see backend.queue). 0: no cap.
    max_running: int = 64
    #: Cores the simulations may reserve in all (0: what psutil sees).
    host_threads: int = 0
    #: Memory in MiB the simulations may reserve in all (0: what psutil sees).
    host_memory_mb: float = 0.0
    #: Most simulations one owner may have holding a process at once (0: no cap).
    max_running_per_owner: int = 0
    #: Seconds between two checks of the limits of every running simulation.
    watchdog_interval: float = 0.2
    #: Seconds between retries of a failed upload (doubling up to 5 minutes).
    upload_retry: float = 5.0
    #: Seconds to connect to S3, seconds to wait for its next byte, and retries of
    #: each request (with backoff): together they bound how long an S3 outage takes
    #: to notice, in every call including uploads and the readiness probe.
    storage_connect_timeout: float = CONNECT_TIMEOUT
    storage_read_timeout: float = READ_TIMEOUT
    storage_retries: int = RETRIES
    #: Most files of a run's results (and logs) listed and uploaded; deeper than 32
    #: folders is left out too. What is left out is said in the record's ``upload``.
    max_result_files: int = 10_000
    #: Largest JSON request body accepted, in bytes.
    max_json_bytes: int = 1024 * 1024
    #: Longest ``POST /v1/simulations?wait=`` in seconds (run and wait, for short runs).
    max_wait: float = 300.0
    #: Largest experiment archive accepted, in bytes.
    max_archive_bytes: int = 512 * 1024 * 1024
    #: Seconds a replaced experiment version stays in storage for runs that resolved it
    #: just before the switch (runs fetching under a lease keep it as long as they need).
    experiment_version_grace: float = 300.0
    #: MiB of fetched experiment versions kept on this host, so the next run of the
    #: same version copies them from local disk (0: every run fetches from storage).
    experiment_cache_mb: int = 1024
    #: What holds every process of a run, so none outlives a stop or hides from the
    #: memory watchdog: ``cgroup`` (a cgroup v2 per run), ``marker`` (the
    #: ``SIMBACKEND_RUN`` variable in each process's environment), ``auto`` (a
    #: cgroup where this machine allows one, else the marker).
    run_boundary: str = "auto"
    #: More names of the backend's environment a simulation server may see, comma-
    #: separated (``*`` ends a prefix); the rest stays out (credentials).
    script_env: str = ""
    #: Largest size of each log file of a run, in bytes (0: no cap); past it the
    #: head is cut, a marker says how much, the tail is kept.
    max_log_bytes: int = 64 * 1024 * 1024
    #: Largest results folder of a run, in bytes (0: no cap); past it the run fails
    #: with ``results_limit`` and no more than this is uploaded.
    max_results_bytes: int = 1024 * 1024 * 1024
    #: Seconds a NEST session may go without a NEST API request before it is stopped
    #: (0: never); ``idle_timeout`` in POST overrides it.
    nest_idle_timeout: float = 600.0
    #: Most NEST calls that last (Simulate, Run, /exec) in flight at once, over all
    #: sessions; each holds a worker thread (0: half of ``threads``).
    nest_long_calls: int = 0
    #: ``host:port`` of the drop-in NEST Server API (one session per API key at the root
    #: of the port; ``simbackend nest-server`` defaults it to 127.0.0.1:52425); '' for none.
    nest_server: str = ""
    #: Origins (comma-separated, ``*`` wildcards) whose browsers may call the NEST
    #: Server API (CORS), as NEST Server allows by default.
    nest_cors_origins: str = "http://localhost:*,http://127.0.0.1:*"
    #: Most event streams (``GET .../events``) open at once; each holds a worker thread
    #: of its own, beside the ``threads`` that serve requests (429 above).
    max_event_streams: int = 256
    #: Seconds between two status events of a running simulation (sent only while
    #: someone follows it).
    event_status_interval: float = 1.0
    #: Bytes sent to an event stream's client that it may leave unread before the stream
    #: is dropped (it may resume from the last event id it got).
    max_event_lag_bytes: int = 1024 * 1024
    #: Warm simulation servers kept ready for experiments with a nest engine (NEST
    #: imported) and for python-only ones, started ahead of demand, each handed one run
    #: (0: none of that kind; see README "Warm start"). Local launcher only.
    pool_nest: int = 2
    pool_python: int = 2
    #: Start every warm server of the pool on its own, not forked from a fork server of
    #: its kind (see README "Warm start": a fork takes milliseconds, a warm-up ~1 s).
    no_pool_forks: bool = False
    log_level: str = "INFO"
    #: Where simulation servers run: ``local`` (children of the backend) or ``slurm``
    #: (one batch job each; see README "Running on Slurm").
    launcher: str = "local"
    #: Folder holding the run directories, on a filesystem the backend and the compute
    #: nodes share (default: the data dir). Run dirs are ``<shared_dir>/runs/<sim_id>``.
    shared_dir: str = ""
    #: ``sbatch --partition`` and ``--account`` (empty: Slurm's defaults).
    slurm_partition: str = ""
    slurm_account: str = ""
    #: More ``sbatch`` options, as one shell-quoted string (``--qos=short --constraint=x``).
    slurm_options: str = ""
    #: Address the simulation server binds its control API to on its node; empty: the
    #: address of the node's hostname.
    slurm_bind_host: str = ""
    #: Python that runs ``-m simserver`` on the nodes (empty: the backend's own, which
    #: must then be at the same path there).
    slurm_python: str = ""
    #: Seconds between two ``squeue`` calls (one for all of the backend's jobs).
    slurm_poll_interval: float = 1.0
    #: Serve without authentication (everyone is an admin): loopback development only.
    no_auth: bool = False
    #: Origins (comma-separated, ``*`` wildcards) whose browsers may call the ``/v1`` API
    #: (CORS); empty: none.
    cors_origins: str = ""
    #: Accepted JWT bearer tokens: their ``iss``, their ``aud``, and the JWKS (a file path
    #: or an https URL) holding the keys that sign them. No JWKS: API keys only.
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_jwks: str = ""
    #: The claim holding the role (dotted path, e.g. ``realm_access.roles``; a list picks
    #: the most privileged role it names), and the claim naming the user (else ``sub``).
    jwt_role_claim: str = "role"
    jwt_name_claim: str = "preferred_username"
    #: Failed authentications one client address may make in a burst, and how many more
    #: per second it regains; past them every attempt from it is answered 429.
    auth_failure_burst: int = 20
    auth_failure_rate: float = 0.5

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"SIMBACKEND_LAUNCHER must be one of {', '.join(LAUNCHERS)}, "
                             f"not {self.launcher!r}")
        if self.slurm_poll_interval <= 0:
            raise ValueError("SIMBACKEND_SLURM_POLL_INTERVAL must be positive")
        if not self.storage:
            self.storage = (self.data_dir / "storage").as_uri()
        if self.storage_connect_timeout <= 0 or self.storage_read_timeout <= 0:
            raise ValueError("SIMBACKEND_STORAGE_CONNECT_TIMEOUT and "
                             "SIMBACKEND_STORAGE_READ_TIMEOUT must be positive")
        if self.connection_limit < 1 or self.channel_timeout <= 0 or self.max_header_bytes < 1:
            raise ValueError("SIMBACKEND_CONNECTION_LIMIT, SIMBACKEND_CHANNEL_TIMEOUT and "
                             "SIMBACKEND_MAX_HEADER_BYTES must be positive")
        if min(self.host_threads, self.host_memory_mb, self.max_running,
               self.max_running_per_owner) < 0:
            raise ValueError("host_threads, host_memory_mb, max_running and "
                             "max_running_per_owner must not be negative")
        if self.nest_long_calls <= 0:
            self.nest_long_calls = max(1, self.threads // 2)
        if self.nest_idle_timeout < 0:
            raise ValueError("SIMBACKEND_NEST_IDLE_TIMEOUT must not be negative")
        if self.max_event_streams < 0 or self.event_status_interval <= 0 or \
                self.max_event_lag_bytes < 1:
            raise ValueError("SIMBACKEND_MAX_EVENT_STREAMS must not be negative, "
                             "SIMBACKEND_EVENT_STATUS_INTERVAL and "
                             "SIMBACKEND_MAX_EVENT_LAG_BYTES must be positive")
        if self.storage_retries < 0:
            raise ValueError("SIMBACKEND_STORAGE_RETRIES must not be negative")
        if self.run_boundary not in MODES:
            raise ValueError(f"SIMBACKEND_RUN_BOUNDARY={self.run_boundary!r} is not one of "
                             f"{', '.join(MODES)}")
        self._check_auth()
        if self.pool_nest < 0 or self.pool_python < 0:
            raise ValueError("SIMBACKEND_POOL_NEST and SIMBACKEND_POOL_PYTHON must not be "
                             "negative")
        if self.max_log_bytes < 0 or self.max_results_bytes < 0:
            raise ValueError("SIMBACKEND_MAX_LOG_BYTES and SIMBACKEND_MAX_RESULTS_BYTES "
                             "must not be negative")

    def _check_auth(self) -> None:
        """Refuse what would expose the backend: no authentication beyond loopback, a
        JWT setup missing a part."""
        dropin_host = self.nest_server.rpartition(":")[0] or self.host
        if self.no_auth and not (is_loopback(self.host) and is_loopback(dropin_host)):
            raise ValueError(f"refusing to serve on {self.host!r} without authentication: "
                             "--no-auth (SIMBACKEND_NO_AUTH) is for loopback (127.0.0.1) "
                             "development only; drop it and use API keys")
        if self.jwt_jwks and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("SIMBACKEND_JWT_JWKS needs SIMBACKEND_JWT_ISSUER and "
                             "SIMBACKEND_JWT_AUDIENCE")
        if self.auth_failure_burst < 1 or self.auth_failure_rate <= 0:
            raise ValueError("SIMBACKEND_AUTH_FAILURE_BURST and SIMBACKEND_AUTH_FAILURE_RATE "
                             "must be positive")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Config:
        """Build a config from ``SIMBACKEND_*`` variables, then ``overrides`` (not None).

        Raises:
            ValueError: a variable does not parse as its field's type.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"SIMBACKEND_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def runs_dir(self) -> Path:
        base = Path(self.shared_dir).expanduser().resolve() if self.shared_dir else self.data_dir
        return base / "runs"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "simbackend.sqlite3"


def _parse(name: str, raw: str, kind: Any) -> Any:
    kind = str(kind)
    if kind == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"SIMBACKEND_{name.upper()}={raw!r} is not 1 or 0")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"SIMBACKEND_{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw
