"""Issue 17, before and after: what a 4M-header archive costs, how /health fares under
idle sockets and a never-ending chunk-size line, and what oversized JSON bodies and
listings cost now (the issue's own figures are the "before" of those).

    .venv/bin/python -m benchmarks.hardening [--entries 4000000] [--only archive|front]

"before" runs the code as it was (``tar.getmembers()`` first; waitress with its
defaults), "after" the code as it is, each in a fresh process so CPU seconds and peak
RSS are that run's alone.
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import percentile
from tests.support import free_port, many_entries_archive, wait_until

IDLE_SOCKETS = 120
PROBE_TIMEOUT = 3.0


# -- the archive: in a child process each --------------------------------------------

def _unpack(mode: str, path: str) -> None:
    import tarfile

    from backend.archive import unpack_experiment
    from backend.exceptions import InvalidArchive

    body = Path(path).read_bytes()
    began = time.process_time()
    if mode == "before":  # backend/archive.py as it was: every header parsed, then the cap
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            outcome = f"refused after parsing {len(tar.getmembers())} entries"
    else:
        with tempfile.TemporaryDirectory() as dest:
            try:
                unpack_experiment(io.BytesIO(body), Path(dest), 512 << 20)
                outcome = "accepted"
            except InvalidArchive as exc:
                outcome = f"refused: {exc.message}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"cpu": time.process_time() - began, "rss": peak, "outcome": outcome}))


def bench_archive(entries: int) -> None:
    with tempfile.NamedTemporaryFile(suffix=".tar.gz") as file:
        file.write(many_entries_archive(entries))
        file.flush()
        size = Path(file.name).stat().st_size
        print(f"archive of {entries} tar headers: {size / 1e6:.1f} MB compressed, "
              f"{entries * 512 / 1e9:.2f} GB of headers")
        for mode in ("before", "after"):
            out = subprocess.run([sys.executable, "-m", "benchmarks.hardening", "--unpack", mode,
                                  file.name], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {mode:<6} cpu={result['cpu']:7.2f} s  peak_rss={result['rss'] / 1e6:8.1f} MB"
                  f"  {result['outcome'][:70]}")


# -- the front: a backend app behind the old or the new server ------------------------

def _serve(mode: str, port: int) -> None:
    from backend.app import create_app
    from backend.config import Config

    config = Config(data_dir=Path(tempfile.mkdtemp(prefix="simbackend-bench-")),
                    examples_dir="", port=port)
    app = create_app(config)
    if mode == "before":  # backend/cli.py as it was
        import waitress

        server = waitress.create_server(app, host=config.host, port=port,
                                        threads=config.threads, ident="simbackend",
                                        clear_untrusted_proxy_headers=True)
    else:
        from backend.wsgi_server import create_server

        server = create_server(app, config)
    print("serving", flush=True)
    server.run()


def _probe(url: str, seconds: float) -> list[float]:
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        began = time.perf_counter()
        try:
            requests.get(url + "/health", timeout=PROBE_TIMEOUT)
            latencies.append(time.perf_counter() - began)
        except requests.RequestException:
            latencies.append(float("inf"))
        time.sleep(0.02)
    return latencies


def _line(name: str, latencies: list[float]) -> str:
    answered = [s for s in latencies if s != float("inf")]
    text = f"  {name:<34} probes={len(latencies):<4} unanswered(>{PROBE_TIMEOUT:.0f}s)=" \
           f"{len(latencies) - len(answered):<3}"
    if answered:
        text += (f" p50={percentile(answered, 50) * 1000:7.1f} ms "
                 f"p99={percentile(answered, 99) * 1000:7.1f} ms")
    return text


def _idle(port: int) -> list[float]:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(IDLE_SOCKETS)]
    try:
        time.sleep(0.5)
        return _probe(f"http://127.0.0.1:{port}", 6)
    finally:
        for sock in socks:
            sock.close()


def _chunked(port: int) -> tuple[list[float], int]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"PUT /v1/experiments/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/gzip"
                 b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent = [0]

    def attack() -> None:
        block, deadline = b"f" * 16384, time.monotonic() + 6
        try:
            while time.monotonic() < deadline and sent[0] < 256 << 20:
                sock.sendall(block)
                sent[0] += len(block)
        except OSError:
            pass

    thread = threading.Thread(target=attack)
    thread.start()
    latencies = _probe(f"http://127.0.0.1:{port}", 6)
    thread.join(10)
    sock.close()
    return latencies, sent[0]


def bench_front() -> None:
    for mode in ("before", "after"):
        print(f"{mode}:")
        for attack in ("idle", "chunked"):
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks.hardening", "--serve",
                                     mode, str(port)], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            try:
                proc.stdout.readline()
                wait_until(lambda port=port: _probe(f"http://127.0.0.1:{port}", 0.01)[0] < 1,
                           20)
                if attack == "idle":
                    print(_line(f"{IDLE_SOCKETS} idle sockets", _idle(port)))
                else:
                    latencies, sent = _chunked(port)
                    print(_line("endless chunk-size line", latencies)
                          + f"  server took {sent / 1e6:.1f} MB of it")
            finally:
                proc.terminate()
                proc.wait(10)


def bench_bodies(params_mb: int = 87) -> None:
    """Item 8: an oversized JSON body, and a listing after many large records."""
    import psutil

    from benchmarks.common import running_backend
    from tests.support import loop_experiment

    with running_backend() as backend:
        backend.upload("loop", loop_experiment())
        rss = psutil.Process(backend.proc.pid).memory_info().rss
        body = json.dumps({"experiment": "loop", "params": {"x": "y" * (params_mb << 20)}})
        began = time.perf_counter()
        response = backend.post("/v1/simulations", data=body,
                                headers={"Content-Type": "application/json"}, timeout=120)
        took = time.perf_counter() - began
        grown = (psutil.Process(backend.proc.pid).memory_info().rss - rss) / 2**20
        print(f"POST with {params_mb} MB of params: {response.status_code} "
              f"{response.json()['error']['code']} in {took * 1000:.0f} ms; backend RSS "
              f"+{grown:.0f} MiB")
        params = {"x": "y" * 60_000}  # just under the 64 KiB cap
        for _ in range(300):
            backend.create("loop", params=params)
        began = time.perf_counter()
        listing = backend.get("/v1/simulations")
        took = time.perf_counter() - began
        print(f"GET /v1/simulations with 300 records of 60 kB params: one page of "
              f"{len(listing.json()['simulations'])}, {len(listing.content) / 1e6:.1f} MB in "
              f"{took * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=4_000_000)
    parser.add_argument("--only", choices=("archive", "front", "bodies"))
    parser.add_argument("--unpack", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs=2, metavar=("MODE", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.unpack:
        _unpack(*args.unpack)
    elif args.serve:
        _serve(args.serve[0], int(args.serve[1]))
    else:
        if args.only in (None, "archive"):
            bench_archive(args.entries)
        if args.only in (None, "front"):
            bench_front()
        if args.only in (None, "bodies"):
            bench_bodies()


if __name__ == "__main__":
    main()
