"""``python -m simserver --run-dir DIR``: run one simulation (started by the backend)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from lifecycle.messages import EXIT_USAGE, TOKEN_ENV


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simserver",
                                     description="Run one simulation of a simbackend run dir.")
    parser.add_argument("--run-dir", required=True, type=Path,
                        help="the run directory prepared by the backend")
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
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
