"""Configuration: defaults, overridden by ``SIMBACKEND_*`` variables, then by flags."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from backend.launchers.boundary import MODES
from storage import CONNECT_TIMEOUT, READ_TIMEOUT, RETRIES


def default_data_dir() -> Path:
    """A per-user data folder (``$XDG_DATA_HOME/simbackend``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "simbackend"


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
    #: requests beyond it get 429.
    max_running: int = 64
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
    #: Longest ``POST /v1/simulations?wait=`` in seconds (run and wait, for short runs).
    max_wait: float = 300.0
    #: Largest experiment archive accepted, in bytes.
    max_archive_bytes: int = 512 * 1024 * 1024
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
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if not self.storage:
            self.storage = (self.data_dir / "storage").as_uri()
        if self.storage_connect_timeout <= 0 or self.storage_read_timeout <= 0:
            raise ValueError("SIMBACKEND_STORAGE_CONNECT_TIMEOUT and "
                             "SIMBACKEND_STORAGE_READ_TIMEOUT must be positive")
        if self.storage_retries < 0:
            raise ValueError("SIMBACKEND_STORAGE_RETRIES must not be negative")
        if self.run_boundary not in MODES:
            raise ValueError(f"SIMBACKEND_RUN_BOUNDARY={self.run_boundary!r} is not one of "
                             f"{', '.join(MODES)}")
        if self.max_log_bytes < 0 or self.max_results_bytes < 0:
            raise ValueError("SIMBACKEND_MAX_LOG_BYTES and SIMBACKEND_MAX_RESULTS_BYTES "
                             "must not be negative")

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
        return self.data_dir / "runs"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "simbackend.sqlite3"


def _parse(name: str, raw: str, kind: Any) -> Any:
    kind = str(kind)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"SIMBACKEND_{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw
