"""Test support: polling with deadlines, a real backend process, a real S3 server
(moto) that can be frozen, experiment archives."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
POLL_INTERVAL = 0.01
#: Config fields of an in-process app without a warm pool (see Backend.start).
NO_POOL = {"pool_nest": 0, "pool_python": 0}
S3_SERVER_START_SECONDS = 30
# Loopback requests must not go through a proxy configured in the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def python_c(code: str, timeout: float = 60.0,
             check: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -c code`` in a process of its own, from the project's root, its output
    captured as text (``check``: raise if it fails)."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=check)


def wait_until(condition: Callable[[], Any], timeout: float = 10.0,
               message: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(POLL_INTERVAL)


def cpu_priority(tid: int = 0) -> tuple[int, int]:
    """A thread's (or a process's main thread's) nice value and scheduling policy."""
    return os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie). One look: a zombie
    that is not ours may be reaped between two."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def make_archive(files: dict[str, str | bytes], top: str = "") -> bytes:
    """A ``.tar.gz`` holding ``files`` (path -> content), optionally under folder ``top``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(f"{top}/{path}" if top else path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(chunks: Callable[[], Any], level: int = 6) -> bytes:
    """A gzip stream (header, deflate, CRC and length trailer) of what ``chunks()`` yields,
    built piece by piece so a huge repetitive body needs little memory."""
    deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    out, crc, size = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"], 0, 0
    for chunk in chunks():
        crc, size = zlib.crc32(chunk, crc), size + len(chunk)
        out.append(deflate.compress(chunk))
    out.append(deflate.flush())
    out.append(crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little"))
    return b"".join(out)


def many_entries_archive(entries: int) -> bytes:
    """A ``.tar.gz`` of ``entries`` headers of the same empty folder: tiny compressed,
    countless entries (what the member cap is for)."""
    header = tarfile.TarInfo("d")
    header.type, header.mode = tarfile.DIRTYPE, 0o755
    block = header.tobuf(format=tarfile.USTAR_FORMAT)
    per_chunk = 2048

    def chunks() -> Any:
        left = entries
        while left > 0:
            yield block * min(per_chunk, left)
            left -= per_chunk
        yield b"\0" * 10240
    return gzip_bytes(chunks)


class HealthProbe:
    """Ask ``GET /health`` on a fresh connection every ``interval`` s in a thread, and
    keep each answer's latency (a failed or non-200 answer counts as infinite)."""

    def __init__(self, url: str, interval: float = 0.02, timeout: float = 5.0) -> None:
        self.url = url + "/health"
        self.interval = interval
        self.timeout = timeout
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            try:
                ok = requests.get(self.url, timeout=self.timeout).status_code == 200
            except requests.RequestException:
                ok = False
            self.latencies.append(time.perf_counter() - began if ok else float("inf"))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 1)

    def assert_fast(self, limit: float = 0.1, worst: float = 1.0) -> None:
        """Nine probes in ten within ``limit`` s and every one within ``worst`` s.

        The machine is shared with other test runs: a single probe may lose the CPU for
        longer than ``limit`` to them, but a backend that stops answering fails both.
        """
        assert self.latencies, "no /health probe ran"
        ordered = sorted(self.latencies)
        # Of fewer than ten probes one may be the slow one (a short attack gives few).
        n = len(ordered)
        typical = ordered[int(n * 0.9) - 1] if n >= 10 else ordered[max(n - 2, 0)]
        shown = [round(s * 1000) for s in self.latencies[:40]]
        assert typical < limit and ordered[-1] < worst, \
            f"/health slower than {limit * 1000:.0f} ms (ms, in order): {shown}"


def terminate(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM `proc`, and SIGKILL it if it is still there after `grace` s."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def aws_env(endpoint: str) -> dict[str, str]:
    """boto3's standard variables pointing at `endpoint` with test credentials; the
    developer's ``~/.aws`` and instance metadata are kept out."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "NO_PROXY": "127.0.0.1,localhost", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}


def boto3_client(endpoint: str) -> Any:
    """A plain boto3 S3 client for `endpoint` with the test credentials."""
    import boto3

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id="testing",
        aws_secret_access_key="testing", region_name="us-east-1")


class MotoServer:
    """A moto S3 server (``python -m moto.server``) in its own process on a loopback port.

    ``freeze``/``thaw`` send SIGSTOP/SIGCONT and wait until the kernel shows the new
    state: a frozen server still accepts connections (the kernel queues them) but never
    answers, like an S3 endpoint that hangs. ``stop`` thaws before it terminates.
    """

    def __init__(self, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""

    def start(self) -> MotoServer:
        port = free_port()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: self._serving(port), S3_SERVER_START_SECONDS, "moto to serve")
        except AssertionError:
            self.stop()
            raise AssertionError(f"moto did not start:\n{self.log_path.read_text()}") from None
        return self

    def _serving(self, port: int) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"moto exited {self.proc.returncode}:\n"
                                 f"{self.log_path.read_text()}")
        try:
            with _NO_PROXY_OPENER.open(f"{self.endpoint}/moto-api/", timeout=1):
                pass
        except OSError:
            return False
        # The port was free a moment ago: make sure it is this process that answers.
        return any(c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in psutil.Process(self.proc.pid).net_connections("tcp"))

    def aws_env(self) -> dict[str, str]:
        return aws_env(self.endpoint)

    def client(self) -> Any:
        return boto3_client(self.endpoint)

    def _status(self) -> str:
        return psutil.Process(self.proc.pid).status()

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)
        wait_until(lambda: self._status() == psutil.STATUS_STOPPED, 5, "moto to freeze")

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        wait_until(lambda: self._status() != psutil.STATUS_STOPPED, 5, "moto to thaw")

    def unread_requests(self) -> int:
        """Connections to this server with bytes it has not read: requests waiting at a
        frozen server (from the kernel's table, ``/proc/net/tcp``)."""
        port = f":{int(self.endpoint.rsplit(':', 1)[1]):04X}"
        waiting = 0
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            _, local, _, state, queues, *_ = line.split()
            if local.endswith(port) and state == "01" and int(queues.split(":")[1], 16):
                waiting += 1
        return waiting

    def stop(self) -> None:
        """Thaw (a stopped process cannot act on SIGTERM), terminate, then kill, by PID."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        terminate(self.proc, 5)


class Backend:
    """``simbackend serve`` as a real subprocess on a loopback port, with a client."""

    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = (), root: Path = ROOT) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, **(env or {})}
        self.args = args
        #: The checkout whose code runs: another one (a benchmark's baseline from
        #: before the warm pool) gets no pool options.
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.http = requests.Session()
        self.http.trust_env = False  # loopback: no proxy (and no lookup of one per request)
        #: The admin key the backend wrote at its first start (None with --no-auth).
        self.token: str | None = None
        self.children: set[int] = set()

    def start(self, timeout: float = 30.0) -> Backend:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        address = self.data_dir / "backend.json"
        address.unlink(missing_ok=True)
        with open(self.data_dir / "backend.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "backend.cli", "serve", "--port", "0",
                 "--data-dir", str(self.data_dir), "--examples-dir", "", "--stop-grace", "2",
                 "--upload-retry", "0.2", "--host-threads", "64",
                 # No warm pool unless a test asks (--pool-nest N): its warm-ups would
                 # take the CPU from the runs whose timing tests measure.
                 *(("--pool-nest", "0", "--pool-python", "0") if self.root == ROOT else ()),
                 *self.args],
                cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)

        def listening() -> dict | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"backend exited {self.proc.returncode}:\n{self.log()}")
            try:
                data = json.loads(address.read_text())
            except (FileNotFoundError, ValueError):
                return None
            return data if data.get("pid") == self.proc.pid else None

        self.url = wait_until(listening, timeout, "the backend to listen")["url"]
        wait_until(lambda: self._health(), timeout, "/health")
        if self.admin_key_file.exists():  # absent with --no-auth
            self.token = self.admin_key_file.read_text().strip()
            self.http.headers["Authorization"] = f"Bearer {self.token}"
        return self

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir / "admin.key"

    def auth_headers(self) -> dict[str, str]:
        """The admin's ``Authorization`` header (empty with ``--no-auth``)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def keys(self, *args: str) -> subprocess.CompletedProcess:
        """Run ``simbackend keys <args>`` (the real CLI) on this backend's data dir."""
        return subprocess.run(
            [sys.executable, "-m", "backend.cli", "keys", *args, "--data-dir",
             str(self.data_dir)], cwd=self.root, env=self.env, capture_output=True, text=True,
            timeout=60)

    def create_key(self, name: str, role: str, expires: str | None = None) -> str:
        """A new API key for ``name`` with ``role`` (``expires`` such as '30d'), made by
        ``simbackend keys create``."""
        done = self.keys("create", "--name", name, "--role", role,
                         *(("--expires", expires) if expires else ()))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def as_token(self, token: str | None) -> requests.Session:
        """A session that talks to this backend as ``token`` (None: no token at all)."""
        session = requests.Session()
        session.trust_env = False
        if token is not None:
            session.headers["Authorization"] = f"Bearer {token}"
        return session

    def _health(self) -> bool:
        try:
            return self.http.get(self.url + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        try:
            return (self.data_dir / "backend.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- HTTP -----------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def upload(self, name: str, files: dict[str, str | bytes]) -> requests.Response:
        return self.put(f"/v1/experiments/{name}", data=make_archive(files),
                        headers={"Content-Type": "application/gzip"})

    def create(self, experiment: str, **fields: Any) -> dict[str, Any]:
        response = self.post("/v1/simulations", json={"experiment": experiment, **fields})
        assert response.status_code == 201, response.text
        return response.json()

    def set_state(self, sim_id: str, state: str) -> requests.Response:
        return self.put(f"/v1/simulations/{sim_id}/state", json={"state": state})

    def record(self, sim_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/simulations/{sim_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def status(self, sim_id: str) -> dict[str, Any]:
        return self.get(f"/v1/simulations/{sim_id}/status").json()

    def wait_state(self, sim_id: str, *states: str, timeout: float = 20.0) -> dict[str, Any]:
        def reached() -> dict | None:
            record = self.record(sim_id)
            return record if record["state"] in states else None

        return wait_until(reached, timeout, f"sim {sim_id} to reach {states}")

    def wait_advancing(self, sim_id: str, beyond: float | None = None,
                       timeout: float = 20.0) -> float:
        """Wait until sim_time passes ``beyond`` (default: where it stands now)."""
        if beyond is None:
            beyond = self.status(sim_id)["sim_time"]
        return wait_until(lambda: (t := self.status(sim_id)["sim_time"]) > beyond and t,
                          timeout, f"sim {sim_id}'s sim_time to pass {beyond}")

    def wait_server_state(self, sim_id: str, state: str, timeout: float = 20.0) -> dict:
        return wait_until(lambda: (s := self.status(sim_id))["server_state"] == state and s,
                          timeout, f"sim {sim_id}'s server to be {state}")

    def wait_uploaded(self, sim_id: str, timeout: float = 20.0) -> dict[str, Any]:
        return wait_until(lambda: (r := self.record(sim_id))["logs_uploaded"] and r,
                          timeout, f"sim {sim_id}'s logs to be uploaded")

    def frozen_sim_time(self, sim_id: str, reads: int = 10, within: float = 0.2) -> float:
        """Read sim_time over >= ``within`` s; assert it does not move and return it."""
        first = self.status(sim_id)["sim_time"]
        deadline = time.monotonic() + within
        seen = []
        while len(seen) < reads or time.monotonic() < deadline:
            seen.append(self.status(sim_id)["sim_time"])
        assert set(seen) == {first}, f"sim_time moved while paused: {sorted(set(seen))[:5]}"
        return first

    def wait_run_dir_removed(self, sim_id: str, timeout: float = 10.0) -> None:
        """Wait for the run dir to go: it is removed just after ``logs_uploaded`` turns true."""
        run_dir = self.data_dir / "runs" / sim_id
        wait_until(lambda: not run_dir.exists(), timeout, f"{run_dir} to be removed")

    # -- processes --------------------------------------------------------------

    def simserver_pids(self) -> set[int]:
        pids = set()
        for server in (self.data_dir / "runs").glob("*/server.json"):
            try:
                pid = json.loads(server.read_text())["pid"]
            except (ValueError, KeyError, TypeError, FileNotFoundError):
                continue
            if isinstance(pid, int):  # a script may have written anything there
                pids.add(pid)
        return pids

    def _remember_children(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.children |= {p.pid for p in psutil.Process(self.proc.pid).children(True)}
            except psutil.Error:
                pass
        self.children |= self.simserver_pids()

    def stop(self) -> None:
        """Stop the backend (SIGTERM, then SIGKILL); simservers outlive it by design."""
        self._remember_children()
        if self.proc is not None and self.proc.poll() is None:
            terminate(self.proc, 10)
        self.http.close()

    def kill9(self) -> None:
        self._remember_children()
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def _orphans(self) -> set[int]:
        """Simulation servers of this data dir that no snapshot caught: spawned between
        the last look at the backend's children and its end, before writing server.json;
        warm servers of its pool (``--pool <key of its runs folder>``); and, once the
        backend is gone, copies of it: a launch under way as it stopped may have forked a
        server that has not yet become one (it would, in its run's cgroup, after this
        look and the cgroups' removal)."""
        from backend.launchers.boundary import runs_key

        runs = str(self.data_dir / "runs") + os.sep
        key = runs_key((self.data_dir / "runs").resolve())
        gone = self.proc is None or self.proc.poll() is not None
        found = set()
        for proc in psutil.process_iter(["cmdline"]):
            args = proc.info["cmdline"] or []
            if "simserver" in args and (any(a.startswith(runs) for a in args) or key in args):
                found.add(proc.pid)
            elif gone and "backend.cli" in args and str(self.data_dir) in args:
                found.add(proc.pid)
        return found

    def cleanup(self) -> None:
        """Stop the backend and every simulation server it started, by PID."""
        self.stop()
        killed = []
        for pid in self.children | self._orphans():
            try:
                proc = psutil.Process(pid)
                os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else proc.kill()
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
            killed.append(pid)
        # One killed while it joined its run's cgroup (a launch under way as the backend
        # stopped) joins it all the same, then dies (a zombie is out of every cgroup):
        # the cgroups go once all are gone.
        wait_until(lambda: not any(alive(pid) for pid in killed), 10,
                   "the killed servers to end")
        self._remove_run_cgroups()

    def _remove_run_cgroups(self) -> None:
        """The run cgroups the backend left (it was stopped with its runs alive)."""
        from backend.launchers.boundary import CgroupBoundary, cgroup_root, runs_key

        key = runs_key((self.data_dir / "runs").resolve())
        root = cgroup_root(key)
        if root is not None and root.is_dir():
            boundary = CgroupBoundary(key, root)
            for sim_id in boundary.runs():
                boundary.kill(sim_id)
            if (root / "pool").is_dir():  # the warm pool's waiting room, once it is empty

                def removed() -> bool:
                    boundary.close_waiting_room()
                    return not (root / "pool").exists()

                wait_until(removed, 10, "the warm pool's cgroup to empty")
            boundary.close()  # the backend's own cgroup, once it holds none


# -- experiments used across the tests -----------------------------------------

def example_files(name: str) -> dict[str, bytes]:
    """The files of ``examples/<name>`` (path -> content), ready for ``Backend.upload``."""
    folder = ROOT / "examples" / name
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts}


COUNTER_ENGINE = '''
class Counter:
    def initialize(self, params):
        self.count = 0
        self.scale = params.get("scale", 1)
    def step(self, t, dt):
        self.count += self.scale
'''

LOOP_SCRIPT = '''
import time
print("script starting")
file_logger.info("params %s", sim.params)
try:
    while True:
        sim.run_loop(1)
        gate = sim.params.get("gate")
        if gate and sim.steps == 1:  # held after its first step until the file exists
            for _ in range(12000):   # (60 s at most)
                if (sim.results_dir / gate).exists():
                    break
                time.sleep(0.005)
        delay = sim.params.get("step_sleep", 0)
        if delay:
            time.sleep(delay)
except SimulationTimeout:
    file_logger.info("reached the timeout at t=%s ms", sim.time)
finally:
    count = sim.engines["counter"].get_datapack("count")
    (sim.results_dir / "count.txt").write_text(str(count))
    print("script ending", count)
'''


def loop_experiment(sim_time: float = 100.0, script: str = LOOP_SCRIPT,
                    **extra: Any) -> dict[str, str]:
    """A counter engine and a loop script; ``extra`` goes into experiment.json."""
    config = {"main_script": "main.py", "timestep": 1.0, "timeout": {"sim_time": sim_time},
              "engines": {"counter": {"type": "python", "model": "counter.py:Counter"}},
              **extra}
    return {"experiment.json": json.dumps(config), "counter.py": COUNTER_ENGINE,
            "main.py": script}


def assert_health_fast(backend: Backend, within: float = 0.1, times: int = 3) -> None:
    """``GET /health`` answers 200 within ``within`` s, ``times`` times in a row."""
    for _ in range(times):
        began = time.monotonic()
        response = backend.get("/health", timeout=5)
        took = time.monotonic() - began
        assert response.status_code == 200, response.text
        assert took < within, f"/health took {took * 1000:.0f} ms"
