"""``python -m simserver --run-dir DIR``: run one simulation (started by the backend)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from lifecycle.messages import EXIT_USAGE, TOKEN_ENV, WARM_KINDS


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simserver",
                                     description="Run one simulation of a simbackend run dir.")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--run-dir", type=Path,
                        help="the run directory prepared by the backend")
    target.add_argument("--warm", choices=WARM_KINDS,
                        help="start warm and wait for a run on stdin (the backend's pool)")
    parser.add_argument("--pool", default="",
                        help="the pool a warm server belongs to (to find it by)")
    parser.add_argument("--forks", action="store_true",
                        help="with --warm: be the pool's fork server of warm servers, on "
                             "the Unix socket that is stdin (simserver.forks)")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.warm and args.forks:
        from simserver.forks import serve_forks

        return serve_forks(args.warm)
    if args.warm:
        from simserver.warm import wait_for_run

        return wait_for_run(args.warm)
    token = os.environ.pop(TOKEN_ENV, "")
    if not token:
        print(f"simserver: {TOKEN_ENV} is not set", file=sys.stderr)
        return EXIT_USAGE
    from simserver.server import main

    return main(args.run_dir.resolve(), token)


def exit_now(code: int) -> None:
    """Flush and leave at once: threads a script started must not keep the process
    alive once the simulation has ended."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_now(run())
