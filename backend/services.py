"""What the backend's parts are built with, typed, in one place."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from backend.config import Config
from backend.events import EventHub
from backend.launchers import Launcher
from backend.registry import Registry
from backend.uploader import Uploader
from storage import Storage

if TYPE_CHECKING:
    from backend.audit import AuditLog
    from backend.auth import Authenticator
    from backend.experiments import ExperimentStore
    from backend.manager import SimulationManager
    from backend.nest_gateway import NestGateway
    from backend.watchdog import Watchdog


def see_everything(record: dict[str, Any]) -> bool:
    return True


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
    #: Live events: supervisors publish what they persist; streams subscribe.
    events: EventHub
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
    #: Appended to by every mutating request.
    audit: AuditLog
    #: Who a token is; None when authentication is off (``--no-auth``).
    auth: Authenticator | None = None
    #: Why storage was unusable at start-up (one line), None if it was fine.
    storage_problem: str | None = None
    #: Called in a request of ``GET /v1/events``: which simulations (by record) its caller
    #: may see. Everyone sees all unless authentication sets it.
    event_visibility: Callable[[], Callable[[dict[str, Any]], bool]] = \
        field(default=lambda: see_everything)

    def end_long_requests(self) -> None:
        """End what holds a request open: event streams end (their clients reconnect to
        the next start where they were), waits for a run's end answer with the record
        as it stands. Only sets flags and wakes threads (safe in a signal handler)."""
        self.manager.stopping.set()
        self.runtime.events.close()

    def close(self) -> list[str]:
        """Stop the backend's own threads; simulation servers live on (they are
        re-adopted by the next start). Return the simulations whose upload was still
        going on after its 5 s (the next start uploads them again)."""
        self.end_long_requests()
        self.watchdog.stop()
        self.nest.stop()
        self.experiments.stop_collector()
        self.manager.scheduler.close()
        uploading = self.runtime.uploader.close()
        self.runtime.launcher.close()
        if self.auth is not None:
            self.auth.keys.close()
        self.audit.close()
        return uploading
