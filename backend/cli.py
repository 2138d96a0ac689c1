"""``simbackend``: the command line."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from backend.config import Config
from storage import StorageError

logger = logging.getLogger("backend")

_EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simbackend",
                                     description="Run neural-simulation experiments over REST.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the backend")
    serve.add_argument("--host", help="address to listen on (SIMBACKEND_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (SIMBACKEND_PORT, default 8642; 0 picks one)")
    serve.add_argument("--data-dir", type=Path,
                       help="registry and run directories (SIMBACKEND_DATA_DIR)")
    serve.add_argument("--storage", help="file:///path or s3://bucket/prefix (SIMBACKEND_STORAGE)")
    serve.add_argument("--examples-dir", help="seed storage with these example experiments "
                       "(SIMBACKEND_EXAMPLES_DIR; default: the bundled examples; '' for none)")
    serve.add_argument("--threads", type=int, help="WSGI worker threads (SIMBACKEND_THREADS)")
    serve.add_argument("--stop-grace", type=float,
                       help="seconds before SIGTERM, then SIGKILL (SIMBACKEND_STOP_GRACE)")
    serve.add_argument("--start-timeout", type=float, help="SIMBACKEND_START_TIMEOUT")
    serve.add_argument("--upload-retry", type=float, help="SIMBACKEND_UPLOAD_RETRY")
    serve.add_argument("--storage-connect-timeout", type=float,
                       help="seconds to connect to S3 (SIMBACKEND_STORAGE_CONNECT_TIMEOUT)")
    serve.add_argument("--storage-read-timeout", type=float,
                       help="seconds to wait for S3's next byte (SIMBACKEND_STORAGE_READ_TIMEOUT)")
    serve.add_argument("--storage-retries", type=int,
                       help="retries of a failed S3 request (SIMBACKEND_STORAGE_RETRIES)")
    serve.add_argument("--log-level", help="SIMBACKEND_LOG_LEVEL (default INFO)")
    return parser


def serve(args: argparse.Namespace) -> int:
    import waitress

    from backend.app import create_app

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
    server = waitress.create_server(app, host=config.host, port=config.port,
                                    threads=config.threads, ident="simbackend",
                                    clear_untrusted_proxy_headers=True)
    port = server.effective_port
    address = {"url": f"http://{config.host}:{port}", "pid": os.getpid()}
    (config.data_dir / "backend.json").write_text(json.dumps(address))
    logger.info("listening: %s (data %s, storage %s)", address["url"], config.data_dir,
                config.storage)
    print(f"simbackend listening on {address['url']}", flush=True)
    server.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
