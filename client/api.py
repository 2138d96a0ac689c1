"""``Client``: one typed method for each thing the REST API does."""
from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, TypedDict
from urllib.parse import quote

import requests

from client.settings import resolve_token, resolve_url
from client.sse import Event, parse

#: How long :meth:`Client.events` keeps trying to reconnect (a backend restarting).
RECONNECT_FOR = 60.0
TERMINAL = ("completed", "stopped", "failed")


class SimbackendError(Exception):
    """Anything the backend refused (``status``, ``code``, ``message`` and the whole JSON
    ``error``), or could not be asked (``status`` None, ``code`` ``unreachable``)."""

    def __init__(self, message: str, status: int | None = None, code: str = "error",
                 error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.error = error or {"code": code, "message": message}

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{self.message} ({self.status} {self.code})"


class FileInfo(TypedDict):
    name: str
    size: int


class Record(TypedDict, total=False):
    id: str
    experiment: str
    state: str
    created_at: str
    updated_at: str
    ended_at: str | None
    main_script: str
    params: dict[str, Any]
    timeout: dict[str, float]
    error: dict[str, Any] | None
    exit_code: int | None
    logs_uploaded: bool


class Status(TypedDict, total=False):
    state: str
    server_state: str | None
    sim_time: float
    real_time: float
    steps: int
    timestep: float | None
    timeout: dict[str, float]
    resources: dict[str, float]
    usage: dict[str, float]          # once ended: cpu_seconds, max_rss_bytes


class Client:
    """A client of one backend. ``url`` and ``token`` default to ``SIMBACKEND_URL`` and
    ``SIMBACKEND_TOKEN`` (then to a backend on this machine, see :mod:`client.settings`).

    Every method raises :class:`SimbackendError` on any failure.
    """

    def __init__(self, url: str | None = None, token: str | None = None,
                 timeout: float = 30.0) -> None:
        self.url = resolve_url(url)
        self.timeout = timeout
        self.http = requests.Session()
        self.http.trust_env = False  # a configured proxy must not see a loopback backend
        token = resolve_token(token, self.url)
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.http.close()

    # -- the service ------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return self._json("GET", "/")

    # -- experiments ------------------------------------------------------------------

    def experiments(self) -> list[dict[str, Any]]:
        return self._all("/v1/experiments", "experiments")

    def experiment(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/experiments/{_seg(name)}")

    def push_experiment(self, folder: str | Path, name: str | None = None) -> dict[str, Any]:
        """Upload a folder holding ``experiment.json`` as experiment ``name`` (default:
        the folder's name), replacing any of that name."""
        folder = Path(folder)
        if not (folder / "experiment.json").is_file():
            raise SimbackendError(f"{folder} has no experiment.json", code="not_an_experiment")
        return self._json("PUT", f"/v1/experiments/{_seg(name or folder.resolve().name)}",
                          data=_archive(folder), headers={"Content-Type": "application/gzip"})

    def delete_experiment(self, name: str) -> None:
        self._call("DELETE", f"/v1/experiments/{_seg(name)}")

    # -- simulations ----------------------------------------------------------------------

    def create(self, experiment: str, *, id: str | None = None,
               params: dict[str, Any] | None = None, timeout: dict[str, float] | None = None,
               limits: dict[str, float] | None = None, main_script: str | None = None,
               state: str | None = None) -> Record:
        body = {"experiment": experiment, "id": id, "params": params, "timeout": timeout,
                "limits": limits, "main_script": main_script, "state": state}
        return self._json("POST", "/v1/simulations",
                          json={k: v for k, v in body.items() if v is not None})

    def simulations(self, state: str | None = None,
                    experiment: str | None = None) -> list[Record]:
        filters = {k: v for k, v in (("state", state), ("experiment", experiment)) if v}
        return self._all("/v1/simulations", "simulations", filters)

    def simulation(self, sim_id: str) -> Record:
        return self._json("GET", self._sim(sim_id))

    def delete(self, sim_id: str) -> None:
        self._call("DELETE", self._sim(sim_id))

    def state(self, sim_id: str) -> str:
        return self._json("GET", self._sim(sim_id, "state"))["state"]

    def set_state(self, sim_id: str, state: str) -> str:
        return self._json("PUT", self._sim(sim_id, "state"), json={"state": state})["state"]

    def start(self, sim_id: str) -> str:
        return self.set_state(sim_id, "started")

    resume = start

    def pause(self, sim_id: str) -> str:
        return self.set_state(sim_id, "paused")

    def stop(self, sim_id: str) -> str:
        return self.set_state(sim_id, "stopped")

    def status(self, sim_id: str) -> Status:
        return self._json("GET", self._sim(sim_id, "status"))

    def wait(self, sim_id: str, timeout: float | None = None) -> Record:
        """The record once the simulation has ended (following its events)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.simulation(sim_id)["state"] not in TERMINAL:
            for event in self.events(sim_id, logs=False, status=deadline is not None):
                if event.type == "end" or (deadline and time.monotonic() > deadline):
                    break
        return self.simulation(sim_id)

    def nest_url(self, sim_id: str) -> str:
        """The base URL of a NEST session's NEST Server API (send the same token)."""
        return f"{self.url}{self._sim(sim_id, 'nest')}/"

    # -- logs and results -------------------------------------------------------------------

    def logs(self, sim_id: str) -> list[FileInfo]:
        return self._all(self._sim(sim_id, "logs"), "logs")

    def log(self, sim_id: str, name: str = "simulation.log", offset: int = 0,
            limit: int | None = None) -> str:
        params = {"offset": offset, **({"limit": limit} if limit is not None else {})}
        return self._call("GET", self._sim(sim_id, "logs", name), params=params).text

    def follow_logs(self, sim_id: str, last_event_id: str | None = None,
                    ) -> Iterator[tuple[str, str]]:
        """(file, line) of every log line, from the start (or ``last_event_id``), as they
        are written, until the simulation has ended."""
        partial: dict[str, str] = {}
        for event in self.events(sim_id, last_event_id=last_event_id, status=False):
            if event.type == "log":
                name = event.data["file"]
                *lines, partial[name] = (partial.get(name, "") + event.data["text"]).split("\n")
                yield from ((name, line) for line in lines)
            elif event.type == "end":
                yield from ((name, rest) for name, rest in partial.items() if rest)
                return

    def results(self, sim_id: str) -> list[FileInfo]:
        return self._all(self._sim(sim_id, "results"), "results")

    def download(self, sim_id: str, name: str, dest: str | Path) -> Path:
        """Save result ``name`` to ``dest`` (a file, or a folder to put it in)."""
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / PurePosixPath(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._call("GET", self._sim(sim_id, "results", name), stream=True) as reply:
            with open(dest, "wb") as out:
                for chunk in reply.iter_content(1 << 16):
                    out.write(chunk)
        return dest

    def download_results(self, sim_id: str, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return [self.download(sim_id, f["name"], folder / PurePosixPath(f["name"]))
                for f in self.results(sim_id)]

    # -- events -----------------------------------------------------------------------------

    def events(self, sim_id: str | None = None, *, last_event_id: str | None = None,
               logs: bool = True, status: bool = True, reconnect: bool = True,
               ) -> Iterator[Event]:
        """The events of one simulation (until its ``end``; none when ``last_event_id``
        is at or past it) or, without ``sim_id``, of every simulation the caller may see
        (endless). A lost connection or a ``dropped`` stream is resumed from the last id
        seen, so no event is missed or repeated."""
        path = self._sim(sim_id, "events") if sim_id else "/v1/events"
        params = {"status": str(status).lower()}
        if sim_id:
            params["logs"] = str(logs).lower()
        last, failing_since = last_event_id, None
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                with self._call("GET", path, params=params, headers=headers, stream=True,
                                timeout=(5.0, 60.0)) as reply:
                    failing_since = None
                    if reply.status_code == 204:
                        return  # the simulation has ended and this position had it all
                    for event in parse(reply):
                        if event.type in ("dropped", "error"):
                            last = event.data.get("last_event_id") or last
                            break
                        last = event.id or last
                        yield event
                        if event.type in ("end", "deleted") and sim_id:
                            return
            except SimbackendError as exc:
                if exc.status is not None or not reconnect:
                    raise
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > RECONNECT_FOR:
                    raise
            except requests.RequestException as exc:  # cut while streaming
                if not reconnect:
                    raise _unreachable(self.url, exc) from None
            if not reconnect:
                return
            time.sleep(0.5)

    # -- plumbing ---------------------------------------------------------------------------

    def _sim(self, sim_id: str, *rest: str) -> str:
        return "/".join([f"/v1/simulations/{_seg(sim_id)}", *(quote(r) for r in rest)])

    def _all(self, path: str, key: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a paged listing."""
        items, cursor = [], None
        while True:
            page = self._json("GET", path, params={**(params or {}), "limit": 1000,
                                                    **({"cursor": cursor} if cursor else {})})
            items += page[key]
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._call(method, path, **kwargs).json()

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            reply = self.http.request(method, self.url + path, **kwargs)
        except requests.RequestException as exc:
            raise _unreachable(self.url, exc) from None
        if reply.status_code >= 400:
            try:
                error = reply.json()["error"]
                message, code = error["message"], error["code"]
            except (ValueError, KeyError, TypeError):
                error, message, code = None, reply.reason or "error", "http_error"
            reply.close()
            raise SimbackendError(message, reply.status_code, code, error)
        return reply


def _unreachable(url: str, exc: Exception) -> SimbackendError:
    reason = type(exc).__name__ if isinstance(exc, requests.Timeout) else "connection failed"
    return SimbackendError(f"cannot reach the backend at {url} ({reason}); is it running? "
                           "(set SIMBACKEND_URL)", code="unreachable")


def _seg(name: str) -> str:
    return quote(name, safe="/")


def _archive(folder: Path) -> bytes:
    """The folder as a .tar.gz, without Python caches."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=".",
                filter=lambda t: None if "__pycache__" in t.name.split("/") else t)
    return buf.getvalue()
