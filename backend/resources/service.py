"""``/``, ``/health``, ``/ready``: what this service is and whether it can work."""
from __future__ import annotations

import functools
import platform
from importlib import metadata
from typing import Any

from flask_restful import Resource

from backend.errors import error_response
from backend.openapi import build_spec
from backend.services import Services
from storage import StorageError


@functools.cache
def package_version(name: str) -> str | None:
    """The installed version of ``name``, looked up once: what this process runs
    (an upgrade on disk meanwhile changes nothing until a restart). Each lookup scans
    the installed distributions, ~1.5 ms: three of them made ``GET /`` take ~5 ms."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


class Root(Resource):
    def __init__(self, services: Services) -> None:
        self.services = services

    def get(self) -> dict[str, Any]:
        return {"name": "simbackend", "version": package_version("simbackend") or "dev",
                "api": "v1",
                "kernels": {"nest": package_version("nest-simulator"),
                            "neuron": package_version("neuron"),
                            "python": platform.python_version()},
                "launcher": self.services.runtime.launcher.facts(),
                "pool": self.services.runtime.launcher.pool()}


class OpenAPI(Resource):
    def __init__(self, services: Services) -> None:
        self.services = services

    def get(self) -> dict[str, Any]:
        return build_spec(package_version("simbackend") or "dev")


class Health(Resource):
    def __init__(self, services: Services) -> None:
        self.services = services

    def get(self) -> dict[str, Any]:
        return {"status": "ok"}


class Ready(Resource):
    """Ready when storage answers and a simulation server could be spawned."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def get(self) -> Any:
        checks = {"storage": "ok", "spawn": "ok"}
        try:
            self.services.storage.check()
        except StorageError as exc:
            checks["storage"] = str(exc)
        problem = self.services.runtime.launcher.problem(self.services.config.runs_dir)
        if problem:
            checks["spawn"] = problem
        failing = {k: v for k, v in checks.items() if v != "ok"}
        if failing:
            message = "; ".join(f"{k}: {v}" for k, v in failing.items())
            return error_response(503, "not_ready", message, checks=checks)
        return {"status": "ready", "checks": checks}
