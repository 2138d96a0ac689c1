"""Run the NEST Server client example in a NEST session of simbackend, and in PyNEST.

    python examples/nest_client_session/client.py [--backend URL] [--key KEY] [--seed N]

creates a NEST session (``POST /v1/simulations {"kernel": "nest", "state": "started"}``),
runs ``network.run`` through the real ``nest-client`` against
``<backend>/v1/simulations/<id>/nest``, stops the session (its spikes are saved to
``results/spikes.npz``), then runs the same lines with plain PyNEST (if installed) and
prints both ``n_events``: with the same seed they are equal.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import requests
from nest_client import NESTClient

HERE = Path(__file__).resolve().parent
# Last, not first: loaded as a module (as the tests do) this file must not shadow the
# project's own ``client`` package for whoever imports it afterwards.
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))

import network  # noqa: E402


def in_session(backend: str, key: str | None, seed: int) -> tuple[str, int]:
    """Create a session, run the example through nest-client, stop it; (id, n_events)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = requests.Session()
    http.headers.update(headers)
    created = http.post(f"{backend}/v1/simulations", json={"kernel": "nest", "state": "started",
                                                           "seed": seed}, timeout=30)
    created.raise_for_status()
    sim_id = created.json()["id"]
    try:
        nsc = NESTClient(f"{backend}/v1/simulations/{sim_id}/nest", headers=headers)
        return sim_id, network.run(nsc, seed)
    finally:
        http.put(f"{backend}/v1/simulations/{sim_id}/state", json={"state": "stopped"},
                 timeout=30)


def in_pynest(seed: int) -> int:
    """The same lines in plain PyNEST, in a fresh process (one kernel per process)."""
    code = (f"import os, sys\nos.environ['PYNEST_QUIET'] = '1'\nsys.path.insert(0, {str(HERE)!r})"
            f"\nimport nest, network\nprint(network.run(nest, {seed}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    return int(out.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="http://127.0.0.1:8642")
    parser.add_argument("--key", help="API key (sent as Authorization: Bearer <key>)")
    parser.add_argument("--seed", type=int, default=network.DEFAULT_SEED)
    parser.add_argument("--no-pynest", action="store_true", help="skip the PyNEST run")
    args = parser.parse_args()
    sim_id, n_events = in_session(args.backend, args.key, args.seed)
    print(f"NEST session {sim_id}: n_events = {n_events}")
    if not args.no_pynest:
        print(f"plain PyNEST:        n_events = {in_pynest(args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
