"""``simbackend``: the command line. ``serve`` starts the backend; every other verb is a
client of one (:mod:`client.cli`), and loads nothing of the backend (no Flask)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

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
    "max_running": "most simulations holding a process at once (0: no cap)",
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
    "max_event_streams": "most event streams open at once (each holds a thread of its own)",
    "event_status_interval": "seconds between two status events of a followed simulation",
    "max_event_lag_bytes": "bytes an event stream's client may leave unread before it is "
                           "dropped",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
}
_TYPES = {"int": int, "float": float, "Path": Path}


def _parser() -> argparse.ArgumentParser:
    from backend.config import Config

    parser = argparse.ArgumentParser(prog="simbackend",
                                     description="Run neural-simulation experiments over REST.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the backend")
    # One flag per configuration field, named and typed after it.
    for f in fields(Config):
        env = f"SIMBACKEND_{f.name.upper()}"
        serve.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name,
                           type=_TYPES.get(str(f.type), str),
                           help=f"{_HELP.get(f.name, '')} ({env})")
    return parser


def serve(args: argparse.Namespace) -> int:
    from backend.app import create_app
    from backend.config import Config
    from backend.wsgi_server import create_server
    from storage import StorageError

    # Registry, run files, tokens, uploads in flight: nobody else's business.
    os.umask(0o077)
    overrides = {k: v for k, v in vars(args).items() if k != "command"}
    if overrides.get("examples_dir") is None and "SIMBACKEND_EXAMPLES_DIR" not in os.environ \
            and _EXAMPLES.is_dir():
        overrides["examples_dir"] = str(_EXAMPLES)
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
    except StorageError as exc:  # an unusable storage URL: nothing to serve
        print(f"simbackend: {exc}", file=sys.stderr)
        return 2
    problem = app.extensions["simbackend"].storage_problem
    if problem:
        print(f"simbackend: {problem}; /ready answers 503 until it is fixed", file=sys.stderr,
              flush=True)
    server = create_server(app, config)
    port = server.effective_port
    address = {"url": f"http://{config.host}:{port}", "pid": os.getpid()}
    (config.data_dir / "backend.json").write_text(json.dumps(address))
    logger.info("listening: %s (data %s, storage %s)", address["url"], config.data_dir,
                config.storage)
    print(f"simbackend listening on {address['url']}", flush=True)
    server.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve(_parser().parse_args(argv))
    from client.cli import main as client_main

    return client_main(argv)


if __name__ == "__main__":
    sys.exit(main())
