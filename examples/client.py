"""A small client of simbackend: upload an experiment, run it, steer it, review it.

    python examples/client.py [--url http://127.0.0.1:8642] [--experiment examples/hello]

Uses requests over one keep-alive session, the way clients should talk to the backend.
"""
from __future__ import annotations

import argparse
import io
import sys
import tarfile
import time
from pathlib import Path

import requests


def upload(http: requests.Session, url: str, folder: Path) -> str:
    """PUT the folder as a .tar.gz; returns the experiment's name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=".", filter=lambda t: None if "__pycache__" in t.name else t)
    reply = http.put(f"{url}/v1/experiments/{folder.name}", data=buf.getvalue(),
                     headers={"Content-Type": "application/gzip"})
    reply.raise_for_status()
    return folder.name


def wait_for(http: requests.Session, url: str, sim_id: str, states: set[str],
             timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = http.get(f"{url}/v1/simulations/{sim_id}").json()
        if record["state"] in states:
            return record
        time.sleep(0.1)
    raise TimeoutError(f"{sim_id} did not reach {states}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8642")
    parser.add_argument("--experiment", type=Path,
                        default=Path(__file__).resolve().parent / "hello")
    parser.add_argument("--sim-time", type=float, default=3000.0, help="ms to simulate")
    args = parser.parse_args()
    url, http = args.url.rstrip("/"), requests.Session()

    name = upload(http, url, args.experiment)
    sim = http.post(f"{url}/v1/simulations", json={
        "experiment": name, "timeout": {"sim_time": args.sim_time}, "state": "started"}).json()
    sim_id = sim["id"]
    print(f"simulation {sim_id} of {name}: {sim['state']}")

    state = lambda s: http.put(f"{url}/v1/simulations/{sim_id}/state", json={"state": s})  # noqa: E731
    time.sleep(0.5)
    paused = state("paused").json()
    print("pause:", paused, http.get(f"{url}/v1/simulations/{sim_id}/status").json()["sim_time"],
          "ms")
    print("resume:", state("started").json())

    record = wait_for(http, url, sim_id, {"completed", "stopped", "failed"})
    print(f"ended {record['state']} (error: {record['error']})")
    record = http.get(f"{url}/v1/simulations/{sim_id}").json()
    for kind in ("logs", "results"):
        files = http.get(f"{url}/v1/simulations/{sim_id}/{kind}").json()[kind]
        print(f"{kind}:", ", ".join(f"{f['name']} ({f['size']} B)" for f in files))
    log = http.get(f"{url}/v1/simulations/{sim_id}/logs/simulation.log").text
    print("last log line:", log.strip().splitlines()[-1])
    return 0 if record["state"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
