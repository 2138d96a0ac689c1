"""The application factory."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask
from flask_restful import Api

from backend import auth, errors, leftovers
from backend.audit import AuditLog
from backend.config import Config
from backend.dashboard import dashboard
from backend.experiments import ExperimentStore, seed_examples
from backend.launchers import Launcher, LocalLauncher
from backend.launchers.boundary import open_boundary, runs_key
from backend.launchers.environment import extra_names
from backend.launchers.pool import WarmPool, sweep_waiting
from backend.launchers.slurm import SlurmLauncher
from backend.manager import SimulationManager
from backend.registry import Registry
from backend.events import EventHub
from backend.nest_gateway import NestGateway
from backend.keys import KeyStore, ensure_admin_key
from backend.resources import (
    audit, events, experiments, files, nest, queue, service, simulations,
)
from backend.tokens import JwtVerifier
from client.settings import ADMIN_KEY_FILE
from backend.services import Runtime, Services
from backend.uploader import Uploader
from backend.version_cache import VersionCache
from backend.watchdog import Watchdog
from storage import Storage, StorageError, open_storage

logger = logging.getLogger(__name__)

ROUTES = [
    (service.Root, "/"),
    (service.Health, "/health"),
    (service.Ready, "/ready"),
    (service.OpenAPI, "/openapi.json"),
    (audit.WhoAmI, "/v1/whoami"),
    (audit.AuditList, "/v1/audit"),
    (experiments.ExperimentList, "/v1/experiments"),
    (experiments.Experiment, "/v1/experiments/<path:name>"),
    (simulations.SimulationList, "/v1/simulations"),
    (simulations.Simulation, "/v1/simulations/<sim_id>"),
    (simulations.SimulationState, "/v1/simulations/<sim_id>/state"),
    (simulations.SimulationStatus, "/v1/simulations/<sim_id>/status"),
    (files.LogList, "/v1/simulations/<sim_id>/logs"),
    (files.LogFile, "/v1/simulations/<sim_id>/logs/<path:name>"),
    (files.ResultList, "/v1/simulations/<sim_id>/results"),
    (files.ResultFile, "/v1/simulations/<sim_id>/results/<path:name>"),
    (queue.Queue, "/v1/queue"),
    (queue.QueueEntry, "/v1/queue/<sim_id>"),
    (nest.NestApi, "/v1/simulations/<sim_id>/nest"),
    (nest.NestApi, "/v1/simulations/<sim_id>/nest/"),
    (nest.NestApi, "/v1/simulations/<sim_id>/nest/<path:rest>"),
    (events.SimulationEvents, "/v1/simulations/<sim_id>/events"),
    (events.AllEvents, "/v1/events"),
]


class JsonApi(Api):
    """Flask-RESTful, but every error goes through :mod:`backend.errors`."""

    def handle_error(self, e: Exception) -> Any:
        raise e


def build_services(config: Config) -> Services:
    """Open storage and the registry, seed the examples, recover running simulations.

    Unusable storage (missing bucket, refused credentials, unreachable) is logged
    and remembered, not raised: the backend serves, ``/ready`` says why it is not.

    Raises:
        StorageError: if ``config.storage`` is not a storage URL.
    """
    leftovers.prepare_data_dir(config.data_dir)
    storage = open_storage(config.storage, connect_timeout=config.storage_connect_timeout,
                           read_timeout=config.storage_read_timeout, retries=config.storage_retries)
    problem = _storage_problem(storage)
    cache = VersionCache(config.data_dir / "cache" / "versions",
                         config.experiment_cache_mb * 2**20) \
        if config.experiment_cache_mb > 0 else None
    store = ExperimentStore(storage, leftovers.scratch_dir(config.data_dir),
                            config.max_archive_bytes, config.experiment_version_grace, cache)
    if problem is None:
        leftovers.sweep(config.data_dir, storage, store)
    runtime = Runtime(config=config, storage=storage, registry=Registry(config.registry_path),
                      launcher=_launcher(config),
                      uploader=Uploader(storage, config.upload_retry, config.max_result_files,
                                        config.max_log_bytes, config.max_results_bytes),
                      experiments=store,
                      events=EventHub(config.event_status_interval, config.max_event_streams,
                                      config.max_result_files))
    if config.examples_dir and problem is None:
        try:
            added = seed_examples(store, Path(config.examples_dir))
            if added:
                logger.info("seeded examples: %s", ", ".join(added))
        except StorageError as exc:
            logger.error("could not seed the examples: %s", exc)
    manager = SimulationManager(runtime, store)
    manager.load()
    runtime.events.start(manager.find, manager.running)
    watchdog = Watchdog(manager.running, config.watchdog_interval)
    watchdog.start()
    gateway = NestGateway(manager, config)
    gateway.start()
    store.start_collector(max(1.0, config.experiment_version_grace / 4))
    return Services(config=config, storage=storage, runtime=runtime, manager=manager,
                    experiments=store, watchdog=watchdog, nest=gateway,
                    audit=AuditLog(config.registry_path), auth=_authenticator(config),
                    storage_problem=problem)


def _authenticator(config: Config) -> auth.Authenticator | None:
    """The authenticator (None with ``--no-auth``). On a first start, with no API key
    yet, an admin key is created into ``<data_dir>/admin.key`` (mode 0600)."""
    if config.no_auth:
        logger.warning("authentication is off (--no-auth): every local user is an admin")
        return None
    keys = KeyStore(config.registry_path)
    written = ensure_admin_key(keys, config.data_dir / ADMIN_KEY_FILE)
    if written is not None:
        logger.info("created the first admin API key: it is in %s (mode 0600); "
                    "'simbackend keys create' makes more", written)
    return auth.Authenticator(keys, JwtVerifier.of(config),
                              auth.FailureLimiter(config.auth_failure_burst,
                                                  config.auth_failure_rate))


def _launcher(config: Config) -> Launcher:
    """The launcher ``config.launcher`` names (one per backend)."""
    if config.launcher == SlurmLauncher.name:
        return SlurmLauncher(config)
    local = LocalLauncher(boundary=open_boundary(config.run_boundary, config.runs_dir),
                          script_env=extra_names(config.script_env))
    # Warm servers of an earlier backend that still wait (they leave when it dies,
    # unless stuck): pool or not, none is left behind.
    sweep_waiting(runs_key(config.runs_dir))
    if not (config.pool_nest or config.pool_python):
        return local
    return WarmPool(local, config.runs_dir,
                    {"nest": config.pool_nest, "python": config.pool_python},
                    forks=not config.no_pool_forks)


def _storage_problem(storage: Storage) -> str | None:
    """Probe `storage` once; return why it is unusable, in one logged line, or None."""
    try:
        storage.check()
    except StorageError as exc:
        problem = " ".join(f"storage is not usable: {exc}".split())
        logger.error("%s (%s)", problem, storage.describe())
        return problem
    return None


def create_app(config: Config | None = None) -> Flask:
    """Build the backend's WSGI application (nothing binds or starts at import).

    ``app.extensions["simbackend"].close()`` stops the threads it started.
    """
    services = build_services(config or Config.from_env())
    app = Flask("simbackend")
    app.config["MAX_CONTENT_LENGTH"] = services.config.max_archive_bytes
    # '//' in a path would answer an HTML 308 redirect (routing redirects bypass error
    # handlers); unmerged, it is an unknown route: a JSON 404.
    app.url_map.merge_slashes = False
    app.json.sort_keys = False
    app.extensions["simbackend"] = services
    api = JsonApi(app)
    routes: dict[type, list[str]] = {}
    for resource, route in ROUTES:  # a resource with several routes is added once
        routes.setdefault(resource, []).append(route)
    for resource, rules in routes.items():
        api.add_resource(resource, *rules, resource_class_kwargs={"services": services})
    app.register_blueprint(dashboard)
    auth.install(app, services)
    errors.register(app)
    return app
