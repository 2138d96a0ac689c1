"""What the backend's parts are built with, typed, in one place."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from backend.config import Config
from backend.launchers import Launcher
from backend.registry import Registry
from backend.uploader import Uploader
from storage import Storage

if TYPE_CHECKING:
    from backend.experiments import ExperimentStore
    from backend.manager import SimulationManager
    from backend.nest_gateway import NestGateway
    from backend.watchdog import Watchdog


@dataclass
class Runtime:
    """What every simulation's supervisor shares."""

    config: Config
    storage: Storage
    registry: Registry
    launcher: Launcher
    uploader: Uploader
    #: Resolves an experiment to the version a launch fetches.
    experiments: ExperimentStore
    #: Told when a simulation reaches a terminal state, so its slot goes to the next
    #: queued run at once (the queue's scheduler sets it; it must not block).
    slot_freed: Callable[[], None] = lambda: None


@dataclass
class Services:
    """What the resources are built with."""

    config: Config
    storage: Storage
    runtime: Runtime
    manager: SimulationManager
    experiments: ExperimentStore
    watchdog: Watchdog
    #: The NEST Server API of NEST sessions (forwarding, idle timeout).
    nest: NestGateway
    #: Why storage was unusable at start-up (one line), None if it was fine.
    storage_problem: str | None = None

    def close(self) -> None:
        """Stop the backend's own threads; simulation servers live on (they are
        re-adopted by the next start)."""
        self.watchdog.stop()
        self.nest.stop()
        self.experiments.stop_collector()
        self.manager.scheduler.close()
        self.runtime.uploader.close()
        self.runtime.launcher.close()
