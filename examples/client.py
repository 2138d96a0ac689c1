"""A small client of simbackend: upload an experiment, run it, steer it, review it.

    python examples/client.py [--url http://127.0.0.1:8642] [--experiment examples/hello]

Uses the project's Python client (``client.Client``): events instead of polling.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client import Client, SimbackendError  # noqa: E402


def steer(sims: Client, sim_id: str) -> None:
    """Pause, look, resume. A short run may end before either lands: the backend then
    refuses the change (409 invalid_transition) and the run keeps the state it ended in."""
    try:
        print("pause:", sims.pause(sim_id), sims.status(sim_id)["sim_time"], "ms")
        print("resume:", sims.resume(sim_id))
    except SimbackendError as exc:
        if exc.code != "invalid_transition":
            raise
        print(f"the run ended first: {exc.message}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="the backend (default: SIMBACKEND_URL, or this machine's)")
    parser.add_argument("--token", help="API key (default: SIMBACKEND_TOKEN)")
    parser.add_argument("--experiment", type=Path,
                        default=Path(__file__).resolve().parent / "hello")
    parser.add_argument("--sim-time", type=float, default=3000.0, help="ms to simulate")
    args = parser.parse_args()
    sims = Client(args.url, args.token)

    name = sims.push_experiment(args.experiment)["name"]
    sim = sims.create(name, timeout={"sim_time": args.sim_time}, state="started")
    sim_id = sim["id"]
    print(f"simulation {sim_id} of {name}: {sim['state']}")

    paused = False
    for event in sims.events(sim_id):
        if event.type == "log":
            print(f"  {event.data['file']}: {event.data['text']}", end="")
        elif event.type == "server_state":
            print(f"  server {event.data['state']}")
            if event.data["state"] == "started" and not paused:
                paused = True
                steer(sims, sim_id)
        elif event.type == "end":
            print(f"ended {event.data['state']} (error: {event.data['error']})")

    record = sims.simulation(sim_id)
    for kind, files in (("logs", sims.logs(sim_id)), ("results", sims.results(sim_id))):
        print(f"{kind}:", ", ".join(f"{f['name']} ({f['size']} B)" for f in files))
    with tempfile.TemporaryDirectory() as out:
        saved = sims.download_results(sim_id, out)
        print("downloaded:", ", ".join(p.name for p in saved))
    return 0 if record["state"] == "completed" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SimbackendError as exc:
        sys.exit(f"client.py: {exc}")
