"""S3 throughput: fetching an experiment and uploading logs, with and without latency.

    python -m benchmarks.storage_throughput [--files 200] [--upload-mb 100] [--rounds 3]

On loopback a CPU-bound local server hides what makes real object storage slow: it is
tens of milliseconds away. So this starts a moto S3 server and, in front of it, a proxy
(:mod:`benchmarks.latency_proxy`) adding 10 ms each way: 20 ms per request. Through the
proxy, then directly, it measures

- fetching a 200-file experiment with ``S3Storage.download_prefix`` (one listing, then
  parallel GETs, sizes checked) against one GET after another (the NRP backend's way);
  target >= 5x faster with the latency;
- uploading 100 MB of logs with ``S3Storage.upload_dir`` (multipart, verified) against a
  raw boto3 ``upload_file``; target >= 0.8x its throughput with the latency.

Each figure is the median of ``--rounds`` runs, the two sides alternating. Once the
latency is hidden the parallel fetch is bound by CPU (botocore's and moto's, a few ms
per request each), so the figures drop when other work shares the cores; the CPU
line shows that cost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

import benchmarks.common  # noqa: F401  (puts the repository on sys.path)
from storage import S3Storage
from tests.support import MotoServer, aws_env, boto3_client, free_port, terminate

BUCKET = "bench"
ONE_WAY_DELAY = 0.010
MB = 1_000_000


@contextmanager
def latency_proxy(target: str, delay: float) -> Iterator[str]:
    """Run the delaying proxy in front of `target`; yield its endpoint; stop it by PID."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.latency_proxy",
            str(port),
            target.removeprefix("http://"),
            str(delay),
        ],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready", "the proxy did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        terminate(proc, 5)


def s3_storage(endpoint: str) -> S3Storage:
    """An S3Storage configured the way the backend's is: from the AWS_* variables."""
    os.environ.update(aws_env(endpoint))
    return S3Storage(BUCKET)


def seed_experiment(client: Any, files: int) -> int:
    """Put an experiment of `files` files (0.5-20 kB) into the bucket; return its bytes."""
    total = 0
    for number in range(files):
        data = os.urandom(500 + (number * 997) % 20_000)
        client.put_object(Bucket=BUCKET, Key=f"experiments/big/file{number:03d}.py", Body=data)
        total += len(data)
    return total


def fetch_sequentially(client: Any, target: Path) -> None:
    """One listing, then one GET after another: the NRP backend's way."""
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="experiments/big/"
    )
    for item in (item for page in pages for item in page.get("Contents", [])):
        path = target / item["Key"].removeprefix("experiments/big/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())


def timed(
    call: Callable[[], object], reset: Callable[[], object], server: psutil.Process
) -> tuple[float, float]:
    """Wall seconds of `call` after `reset`, and the CPU seconds it cost here plus in the server."""
    reset()
    cpu = time.process_time() + sum(server.cpu_times()[:2])
    began = time.perf_counter()
    call()
    return time.perf_counter() - began, time.process_time() + sum(server.cpu_times()[:2]) - cpu


def compare(
    ours: Callable[[], object],
    theirs: Callable[[], object],
    rounds: int,
    reset: Callable[[], object],
    server: psutil.Process,
) -> tuple[float, float, float]:
    """Median wall seconds of ours and theirs, measured in alternation (so load drifts hit
    both alike), and the median CPU seconds of ours."""
    ours_runs, theirs_runs = [], []
    for _ in range(rounds):
        theirs_runs.append(timed(theirs, reset, server))
        ours_runs.append(timed(ours, reset, server))
    return (
        statistics.median(w for w, _ in ours_runs),
        statistics.median(w for w, _ in theirs_runs),
        statistics.median(c for _, c in ours_runs),
    )


def measure(
    endpoint: str, work: Path, log: Path, rounds: int, server: psutil.Process
) -> dict[str, float]:
    storage, client = s3_storage(endpoint), boto3_client(endpoint)
    down = work / "down"
    figures = dict(
        zip(
            ("fetch_ours", "fetch_seq", "fetch_cpu"),
            compare(
                lambda: storage.download_prefix("experiments/big", down),
                lambda: fetch_sequentially(client, down),
                rounds,
                lambda: shutil.rmtree(down, ignore_errors=True),
                server,
            ),
            strict=True,
        )
    )
    figures |= dict(
        zip(
            ("up_ours", "up_raw", "up_cpu"),
            compare(
                lambda: storage.upload_dir(log.parent, "simulations/bench/logs"),
                lambda: client.upload_file(str(log), BUCKET, "raw/simulation.log"),
                rounds,
                lambda: None,
                server,
            ),
            strict=True,
        )
    )
    return figures


def report(title: str, figures: dict[str, float], files: int, size: int, targets: bool) -> None:
    speedup = figures["fetch_seq"] / figures["fetch_ours"]
    ratio = figures["up_raw"] / figures["up_ours"]
    fetch_ok = f"  target >= 5x: {'OK' if speedup >= 5 else 'MISSED'}" if targets else ""
    up_ok = f"  target >= 0.8x: {'OK' if ratio >= 0.8 else 'MISSED'}" if targets else ""
    print(title)
    print(
        f"  fetch {files} files     S3Storage.download_prefix {figures['fetch_ours']:6.3f} s"
        f"   sequential GETs   {figures['fetch_seq']:6.3f} s   {speedup:4.1f}x faster{fetch_ok}"
    )
    print(
        f"  upload {size / MB:.0f} MB logs  "
        f"S3Storage.upload_dir {size / MB / figures['up_ours']:8.1f} MB/s"
        f"   boto3 upload_file {size / MB / figures['up_raw']:6.1f} MB/s   {ratio:4.2f}x{up_ok}"
    )
    print(
        "  CPU (this process + S3 server) per fetched file "
        f"{figures['fetch_cpu'] / files * 1000:.1f} ms,"
        f" per uploaded MB {figures['up_cpu'] / (size / MB) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--upload-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="simbackend-bench-") as tmp:
        work = Path(tmp)
        moto = MotoServer(work / "moto.log").start()
        try:
            moto.client().create_bucket(Bucket=BUCKET)
            server = psutil.Process(moto.proc.pid)
            seeded = seed_experiment(moto.client(), args.files)
            log = work / "logs" / "simulation.log"
            log.parent.mkdir()
            log.write_bytes(os.urandom(args.upload_mb * MB))
            print(
                f"S3 throughput (moto on loopback; {args.files} files of "
                f"{seeded / args.files / 1000:.1f} kB "
                f"on average; median of {args.rounds} rounds; {os.cpu_count()} cores, "
                f"load average {os.getloadavg()[0]:.1f})"
            )
            with latency_proxy(moto.endpoint, ONE_WAY_DELAY) as proxied:
                figures = measure(proxied, work, log, args.rounds, server)
            report(
                f"with {2 * ONE_WAY_DELAY * 1000:.0f} ms per request (delaying proxy)",
                figures,
                args.files,
                log.stat().st_size,
                targets=True,
            )
            figures = measure(moto.endpoint, work, log, args.rounds, server)
            report("without added latency", figures, args.files, log.stat().st_size, targets=False)
        finally:
            moto.stop()


if __name__ == "__main__":
    main()
