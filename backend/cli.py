"""``simbackend``: the command line. ``serve`` starts the backend; every other verb is a
client of one (:mod:`client.cli`), and loads nothing of the backend (no Flask)."""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import fields, replace
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend.config import Config
    from backend.services import Services

logger = logging.getLogger("backend")

_EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


_HELP = {
    "host": "address to listen on",
    "port": "port (0 picks a free one)",
    "data_dir": "registry and run directories",
    "storage": "file:///path or s3://bucket/prefix",
    "examples_dir": "seed storage with the experiments in this folder ('' for none; "
                    "default: the bundled examples)",
    "threads": "WSGI worker threads",
    "connection_limit": "most open connections; at the limit the longest idle one is closed",
    "channel_timeout": "seconds an idle connection is kept open",
    "max_header_bytes": "largest request line and headers accepted",
    "stop_grace": "seconds a stopped simulation gets before SIGTERM, and again before SIGKILL",
    "start_timeout": "seconds a simulation server has to become ready",
    "real_time_limit": "default real-time timeout of a run in seconds (0: none)",
    "memory_limit_mb": "default memory limit of a run's process tree in MiB (0: none)",
    "max_running": "most simulations holding a process at once; more are queued (0: no cap)",
    "host_threads": "cores the simulations may reserve in all (0: what psutil sees)",
    "host_memory_mb": "MiB the simulations may reserve in all (0: what psutil sees)",
    "max_running_per_owner": "most simulations of one owner holding a process (0: no cap)",
    "watchdog_interval": "seconds between limit checks",
    "upload_retry": "seconds before the first retry of a failed upload (doubling)",
    "storage_connect_timeout": "seconds to connect to S3",
    "storage_read_timeout": "seconds to wait for S3's next byte",
    "storage_retries": "retries of a failed S3 request",
    "max_archive_bytes": "largest experiment archive accepted",
    "max_result_files": "most files of a run's results (and logs) listed and uploaded",
    "max_json_bytes": "largest JSON request body accepted",
    "max_wait": "longest POST /v1/simulations?wait= in seconds",
    "experiment_version_grace": "seconds a replaced experiment version is kept for runs "
                                "fetching it",
    "experiment_cache_mb": "MiB of fetched experiment versions kept on this host for the "
                           "next run of the same version (0: none)",
    "run_boundary": "what holds all processes of a run: auto, cgroup (v2) or marker "
                    "(an environment variable)",
    "script_env": "more environment variables simulation servers may see, comma-separated "
                  "('*' ends a prefix)",
    "max_log_bytes": "largest size of each log file of a run; the head is cut (0: no cap)",
    "max_results_bytes": "largest results folder of a run; over it the run fails (0: no cap)",
    "nest_idle_timeout": "seconds without a NEST API request before a NEST session is "
                         "stopped (0: never)",
    "nest_long_calls": "most Simulate/Run/exec calls in flight at once (0: half the threads)",
    "nest_server": "host:port of the drop-in NEST Server API ('' none; nest-server: "
                   "127.0.0.1:52425)",
    "nest_cors_origins": "origins allowed to call the NEST Server API from a browser",
    "max_event_streams": "most event streams open at once (each holds a thread of its own)",
    "event_status_interval": "seconds between two status events of a followed simulation",
    "max_event_lag_bytes": "bytes an event stream's client may leave unread before it is "
                           "dropped",
    "pool_nest": "warm simulation servers kept ready (NEST imported) for experiments with "
                 "a nest engine (0: none)",
    "pool_python": "warm simulation servers kept ready for python-only experiments "
                   "(0: none)",
    "no_pool_forks": "start each warm server on its own, not forked from a warm fork "
                     "server of its kind",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "launcher": "where simulation servers run: local or slurm",
    "shared_dir": "folder of the run directories, shared with the compute nodes "
                  "(default: the data dir)",
    "slurm_partition": "sbatch --partition (default: Slurm's)",
    "slurm_account": "sbatch --account (default: Slurm's)",
    "slurm_options": "more sbatch options, shell-quoted, e.g. '--qos=short'",
    "slurm_bind_host": "address the simulation server binds to on its node "
                       "(default: the address of the node's hostname)",
    "slurm_python": "python that runs -m simserver on the nodes (default: the backend's)",
    "slurm_poll_interval": "seconds between two squeue calls for all jobs",
    "no_auth": "serve without authentication, everyone an admin (loopback only)",
    "cors_origins": "origins (comma-separated, '*' wildcards) whose browsers may call /v1",
    "jwt_issuer": "accepted JWTs' issuer (iss)",
    "jwt_audience": "accepted JWTs' audience (aud)",
    "jwt_jwks": "JWKS file or URL of the keys signing accepted JWTs ('' for API keys only)",
    "jwt_role_claim": "JWT claim holding the role (dotted path; a list picks the highest)",
    "jwt_name_claim": "JWT claim naming the user (else sub)",
    "auth_failure_burst": "failed authentications a client address may make in a burst",
    "auth_failure_rate": "failed authentications per second it regains after the burst",
}
#: Where ``simbackend nest-server`` serves the drop-in NEST Server API by default
#: (NEST Server's own port).
DROPIN_ADDRESS = "127.0.0.1:52425"
_TYPES = {"int": int, "float": float, "Path": Path}


def _parser() -> argparse.ArgumentParser:
    from backend.config import Config

    parser = argparse.ArgumentParser(prog="simbackend",
                                     description="Run neural-simulation experiments over REST.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the backend")
    dropin = sub.add_parser("nest-server", help="start the backend and the drop-in NEST "
                            "Server API (one NEST session per API key) at the root of "
                            f"{DROPIN_ADDRESS} (--nest-server)")
    # One flag per configuration field, named and typed after it.
    for command in (serve, dropin):
        for f in fields(Config):
            env = f"SIMBACKEND_{f.name.upper()}"
            if str(f.type) == "bool":
                command.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name,
                                     action="store_true", default=None,
                                     help=f"{_HELP.get(f.name, '')} ({env}=1)")
                continue
            command.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name,
                                 type=_TYPES.get(str(f.type), str),
                                 help=f"{_HELP.get(f.name, '')} ({env})")
    return parser


def config_overrides(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """The flags given, plus the defaults that depend on the command."""
    overrides = {k: v for k, v in vars(args).items() if k != "command"}
    if args.command == "nest-server" and overrides.get("nest_server") is None and \
            "SIMBACKEND_NEST_SERVER" not in environ:
        overrides["nest_server"] = DROPIN_ADDRESS
    if overrides.get("examples_dir") is None and "SIMBACKEND_EXAMPLES_DIR" not in environ \
            and _EXAMPLES.is_dir():
        overrides["examples_dir"] = str(_EXAMPLES)
    return overrides


def serve(args: argparse.Namespace) -> int:
    from backend.app import create_app
    from backend.config import Config
    from backend.wsgi_server import create_server
    from simserver.__main__ import exit_now
    from storage import StorageError

    # Registry, run files, tokens, uploads in flight: nobody else's business.
    os.umask(0o077)
    overrides = config_overrides(args, os.environ)
    try:
        config = Config.from_env(**overrides)
    except ValueError as exc:
        print(f"simbackend: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("transitions").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)  # "found credentials in ..."
    try:
        app = create_app(config)
    except (StorageError, ValueError) as exc:  # unusable storage URL, run boundary
        print(f"simbackend: {exc}", file=sys.stderr)
        return 2
    problem = app.extensions["simbackend"].storage_problem
    if problem:
        print(f"simbackend: {problem}; /ready answers 503 until it is fixed", file=sys.stderr,
              flush=True)
    server = create_server(app, config)
    port = server.effective_port
    address = {"url": f"http://{config.host}:{port}", "pid": os.getpid()}
    if config.nest_server:
        try:
            address["nest_server_url"] = _serve_dropin(app, config)
        except (ValueError, OSError) as exc:
            print(f"simbackend: --nest-server {config.nest_server!r}: {exc}", file=sys.stderr)
            return 2
    (config.data_dir / "backend.json").write_text(json.dumps(address))
    logger.info("listening: %s (data %s, storage %s)", address["url"], config.data_dir,
                config.storage)
    print(f"simbackend listening on {address['url']}", flush=True)
    services = app.extensions["simbackend"]
    _stop_on_signals(services)
    # What start-up made (~40,000 objects the garbage collector tracks: Flask, waitress,
    # the storage client, the app) lives as long as the backend: out of every later
    # collection. A full one went through it all in 13-20 ms (97 ms the first time), in
    # the middle of whichever request's allocations set it off.
    gc.freeze()
    server.run()  # until SIGTERM or SIGINT; then waitress lets its workers finish (<= 5 s)
    code, uploading = 0, []
    try:
        uploading = services.close()
    except Exception:  # the simulations go on either way; the next start sweeps the rest
        logger.exception("stopping: the backend's own threads could not all be stopped")
        code = 1
    if uploading:
        logger.warning("stopping: the upload of %s did not end within 5 s (storage is not "
                       "answering); the next start makes it again", ", ".join(uploading))
    logger.info("stopped")
    # Without waiting for storage requests that hang: Python would join boto3's transfer
    # threads at exit, up to its timeouts times its retries (~25 s by default). What they
    # were doing is done again by the next start, as after a kill.
    exit_now(code)
    return code


def _stop_on_signals(services: Services) -> None:
    """Make SIGTERM and SIGINT stop the backend in order: event streams end and waits
    for a run's end answer (:meth:`Services.end_long_requests`), waitress lets the
    requests in flight finish, then :meth:`Services.close` stops the backend's threads
    and lets the idle warm servers go. Simulations go on. A second signal ends the
    process at once."""

    def stop(signum: int, frame: Any) -> None:
        for each in (signal.SIGTERM, signal.SIGINT):
            signal.signal(each, signal.SIG_DFL)
        logger.info("stopping (%s): simulations go on; the same signal again ends this "
                    "process at once", signal.Signals(signum).name)
        # Only flags and wake-ups: the main thread, which this interrupts, runs
        # waitress's socket loop and never holds the locks they take.
        services.end_long_requests()
        raise SystemExit(0)  # waitress's run() takes it as the end of its loop

    for each in (signal.SIGTERM, signal.SIGINT):
        signal.signal(each, stop)


def _serve_dropin(app: Any, config: Config) -> str:
    """Bind the drop-in NEST Server API and serve it on a thread; return its URL.

    Raises:
        ValueError: not ``host:port``; OSError: the port cannot be bound.
    """
    from backend.nest_dropin import create_dropin_app
    from backend.wsgi_server import create_server

    host, sep, port = config.nest_server.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("expected host:port, such as 127.0.0.1:52425")
    dropin = create_dropin_app(app.extensions["simbackend"])
    server = create_server(dropin, replace(config, host=host.strip("[]") or config.host,
                                           port=int(port)))
    threading.Thread(target=server.run, name="nest-server", daemon=True).start()
    url = f"http://{host or config.host}:{server.effective_port}"
    logger.info("listening: %s (drop-in NEST Server API, one session per API key)", url)
    print(f"simbackend NEST Server API on {url}", flush=True)
    return url


def _keys_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simbackend keys", description="Manage API keys "
                                     "(in the registry of the data dir; no backend needed).")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-dir", help="the backend's data dir (SIMBACKEND_DATA_DIR)")
    data.add_argument("--json", action="store_true", help="print JSON, for scripts")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", parents=[data], help="create a key and print it (once)")
    create.add_argument("--name", required=True, help="who the key is for (becomes the owner)")
    create.add_argument("--role", required=True, help="admin, operator, scientist or observer")
    create.add_argument("--expires", help="lifetime, such as 30d, 12h, 90m (default: never)")
    sub.add_parser("list", parents=[data], help="list the keys (never the keys themselves)")
    revoke = sub.add_parser("revoke", parents=[data], help="revoke a key by id, or every "
                            "key of a name")
    revoke.add_argument("key", metavar="NAME_OR_ID")
    return parser


def keys(argv: list[str]) -> int:
    """``simbackend keys create|list|revoke``: every change is audited."""
    import getpass

    from backend.audit import AuditEntry, AuditLog
    from backend.config import Config
    from backend.exceptions import BackendError
    from backend.keys import KeyStore, parse_duration

    args = _keys_parser().parse_args(argv)
    config = Config.from_env(data_dir=args.data_dir)
    store, audit = KeyStore(config.registry_path), AuditLog(config.registry_path)
    actor = f"cli:{getpass.getuser()}"
    try:
        if args.action == "list":
            return _print_keys(store.list(), args.json)
        if args.action == "create":
            expires = parse_duration(args.expires) if args.expires else None
            entry, key = store.create(args.name, args.role, expires)
            audit.append(AuditEntry(actor, "admin", "CLI", "keys create", entry["id"], 201,
                                    "local"))
            print(json.dumps({**entry, "key": key}) if args.json else key)
            if not args.json:
                print(f"key {entry['id']} for {entry['name']} ({entry['role']}); it is shown "
                      "only now", file=sys.stderr)
            return 0
        ids = store.revoke(args.key)
        audit.append(AuditEntry(actor, "admin", "CLI", "keys revoke", args.key, 200, "local"))
        print(json.dumps({"revoked": ids}) if args.json else f"revoked: {', '.join(ids)}")
        return 0
    except BackendError as exc:
        print(f"simbackend keys: {exc.message}", file=sys.stderr)
        return 2
    finally:
        store.close()
        audit.close()


def _print_keys(entries: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print(json.dumps({"keys": entries}))
        return 0
    print(f"{'ID':16}  {'NAME':16}  {'ROLE':9}  {'STATUS':8}  {'EXPIRES':24}  LAST USED")
    for e in entries:
        status = "revoked" if e["revoked_at"] else "active" if e["active"] else "expired"
        print(f"{e['id']:16}  {e['name'][:16]:16}  {e['role']:9}  {status:8}  "
              f"{e['expires_at'] or 'never':24}  {e['last_used_at'] or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["serve"], ["nest-server"]):
        return serve(_parser().parse_args(argv))
    if argv[:1] == ["keys"]:
        return keys(argv[1:])
    from client.cli import main as client_main

    return client_main(argv)


if __name__ == "__main__":
    sys.exit(main())
