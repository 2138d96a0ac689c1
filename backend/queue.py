"""The queue: runs asked to start beyond the host's capacity wait their turn.

Capacity is counted in what runs reserve (``threads`` cores and ``memory_mb`` MiB,
declared in POST or experiment.json), capped again by ``--max-running`` in all and
``--max-running-per-owner`` per owner. The order is priority (higher first), then
first come. A run waiting for resources holds back the runs behind it (no
backfilling, so a big run is never starved by small ones); a run held back by its
owner's cap does not, so one user cannot block the others.

:func:`plan` decides, purely, what to admit and why the rest wait. The
:class:`Scheduler` keeps the entries, persists their order in the registry (so it
survives a kill -9), admits runs by firing their lifecycles, and runs a pass at once
whenever a slot frees (a run ending wakes it; nothing polls).
"""
from __future__ import annotations

import functools
import logging
import math
import shutil
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

import psutil

from backend.config import Config
from backend.exceptions import ExceedsHost, Forbidden, NotQueued
from backend.registry import Registry, utc_now
from lifecycle import ACTIVE_STATES, SimState, experiment
from lifecycle.errors import InvalidExperiment

if TYPE_CHECKING:
    from backend.supervisor import SimulationSupervisor

logger = logging.getLogger(__name__)

ANONYMOUS = "anonymous"


# -- what runs reserve and what the host has -------------------------------------------

@dataclass(frozen=True)
class Demand:
    """What one run reserves of the host while it holds a process."""

    threads: int = 1
    memory_mb: float = 0.0


def resolve_demand(requested: dict[str, Any], experiment_config: dict[str, Any],
                   limits: dict[str, float], config: Config) -> Demand:
    """POST ``resources`` win over experiment.json's. Memory not declared is the run's
    memory limit (it may use that much), else nothing.

    Raises:
        InvalidExperiment: the experiment's ``resources`` are malformed.
    """
    declared = {**experiment.resources(experiment_config), **requested}
    try:
        exp_limits = experiment.limits(experiment_config)
    except InvalidExperiment:
        exp_limits = {}  # the simulation server reports what is wrong with it
    memory = declared.get("memory_mb") or limits.get("memory_mb") or \
        exp_limits.get("memory_mb") or config.memory_limit_mb
    return Demand(threads=int(declared.get("threads", 1)), memory_mb=float(memory or 0.0))


@dataclass(frozen=True)
class Capacity:
    """What the host lends to simulations; 0 in a cap means none."""

    threads: int
    memory_mb: float
    max_running: int = 0
    per_owner: int = 0

    @classmethod
    def of_host(cls, config: Config, reserved_mb: float = 0.0) -> Capacity:
        """The configured capacity; cores and memory default to what psutil sees.
        ``reserved_mb`` (the launcher's warm servers) is not lent to runs."""
        memory = config.host_memory_mb or psutil.virtual_memory().total / 2**20
        return cls(threads=config.host_threads or psutil.cpu_count() or 1,
                   memory_mb=max(0.0, memory - reserved_mb),
                   max_running=config.max_running, per_owner=config.max_running_per_owner)

    def to_dict(self) -> dict[str, Any]:
        return {"threads": self.threads, "memory_mb": round(self.memory_mb, 1),
                "max_running": self.max_running, "max_running_per_owner": self.per_owner}


def owner_key(owner: str | None) -> str:
    return owner or ANONYMOUS


# -- the order and the admission, as pure functions ---------------------------------------

@dataclass
class Entry:
    """One queued run."""

    sim_id: str
    owner: str | None
    priority: int
    seq: float                # first come; a moved entry gets one between its neighbours'
    target: SimState          # what was asked for: initialized or started
    demand: Demand
    queued_at: str = field(default_factory=utc_now)


@dataclass(frozen=True)
class Holder:
    """One run holding a slot (initialized, started or paused)."""

    sim_id: str
    owner: str | None
    demand: Demand


@dataclass
class Plan:
    """What a pass decided: the runs to admit now, in order, and why the others wait."""

    admit: list[Entry]
    waiting: list[Entry]
    reasons: dict[str, str]


def ordered(entries: Iterable[Entry]) -> list[Entry]:
    """Higher priority first, then first come."""
    return sorted(entries, key=lambda e: (-e.priority, e.seq))


def plan(entries: Iterable[Entry], holders: Iterable[Holder], capacity: Capacity) -> Plan:
    """Walk the queue in order, admitting while the host has room."""
    holders = list(holders)
    free_threads = capacity.threads - sum(h.demand.threads for h in holders)
    free_memory = capacity.memory_mb - sum(h.demand.memory_mb for h in holders)
    running = len(holders)
    per_owner = Counter(owner_key(h.owner) for h in holders)
    result = Plan([], [], {})
    blocker: tuple[str, str] | None = None
    for entry in ordered(entries):
        owner = owner_key(entry.owner)
        if capacity.per_owner and per_owner[owner] >= capacity.per_owner:
            result.reasons[entry.sim_id] = (f"owner {owner} has {per_owner[owner]} running "
                                            f"(the per-owner cap)")
        elif blocker is not None:
            result.reasons[entry.sim_id] = f"behind {blocker[0]} ({blocker[1]})"
        else:
            reason = shortfall(entry.demand, free_threads, free_memory, running, capacity)
            if reason is None:
                result.admit.append(entry)
                free_threads -= entry.demand.threads
                free_memory -= entry.demand.memory_mb
                running += 1
                per_owner[owner] += 1
                continue
            result.reasons[entry.sim_id] = reason
            blocker = (entry.sim_id, reason)
        result.waiting.append(entry)
    return result


def shortfall(demand: Demand, free_threads: float, free_memory: float, running: int,
              capacity: Capacity) -> str | None:
    """Why ``demand`` does not fit now ("waiting for 2 cores"), or None if it does."""
    if capacity.max_running and running >= capacity.max_running:
        return f"waiting for a slot ({capacity.max_running} running, the cap)"
    missing = []
    if demand.threads > free_threads:
        cores = demand.threads - max(free_threads, 0)
        missing.append(f"{cores:g} core{'s' if cores != 1 else ''}")
    if demand.memory_mb > free_memory:
        missing.append(f"{demand.memory_mb - max(free_memory, 0):.0f} MiB")
    return f"waiting for {' and '.join(missing)}" if missing else None


def never_fits(demand: Demand, capacity: Capacity) -> str | None:
    """Why ``demand`` exceeds the whole host, or None."""
    if demand.threads > capacity.threads:
        return f"the run needs {demand.threads} cores; the host lends {capacity.threads}"
    if demand.memory_mb > capacity.memory_mb:
        return (f"the run needs {demand.memory_mb:.0f} MiB; the host lends "
                f"{capacity.memory_mb:.0f} MiB")
    return None


def move(order: list[Entry], entry: Entry, position: int) -> list[Entry]:
    """Put ``entry`` at ``position`` of ``order`` (clamped); return the entries whose
    ``seq`` changed (to be saved).

    The entry takes the priority of its new neighbour and a ``seq`` between its
    neighbours', so the order stays sorted by (priority, seq), reads back the same after
    a restart, and the others keep their first-come order. When no number fits between
    the neighbours (after dozens of moves to one spot) every entry is renumbered.
    """
    rest = [e for e in order if e is not entry]
    position = max(0, min(position, len(rest)))
    changed = [entry]
    if position < len(rest):
        after = rest[position]
        before = rest[position - 1] if position and \
            rest[position - 1].priority == after.priority else None
        entry.priority = after.priority
        entry.seq = after.seq - 1 if before is None else (before.seq + after.seq) / 2
        if before is not None and not before.seq < entry.seq < after.seq:
            changed = rest
    elif rest:
        entry.priority, entry.seq = rest[-1].priority, rest[-1].seq + 1
    rest.insert(position, entry)
    if changed is rest:
        for seq, e in enumerate(rest):
            e.seq = seq
    order[:] = rest
    return changed


# -- the policy hook (authentication fills it) ------------------------------------------

class QueuePolicy(Protocol):
    def may_prioritise(self, identity: Any) -> bool:
        """May ``identity`` raise a run's priority (above 0, or above where it is) and
        move queue entries? (Operators and admins, once roles exist.)"""


class AllowAll:
    """The policy until authentication lands: everyone may."""

    def may_prioritise(self, identity: Any) -> bool:
        return True


# -- the scheduler -------------------------------------------------------------------------

class Scheduler:
    """Keeps the queue and admits runs as capacity frees.

    Lock order: the scheduler's lock, then a lifecycle's lock; lifecycle callbacks
    only call :meth:`wake`, which takes no lock of ours.
    """

    def __init__(self, registry: Registry, capacity: Capacity,
                 find: Callable[[str], SimulationSupervisor | None],
                 policy: QueuePolicy | None = None) -> None:
        self.registry = registry
        self.capacity = capacity
        self.policy: QueuePolicy = policy or AllowAll()
        self._find = find
        self._lock = threading.RLock()
        self._entries: dict[str, Entry] = {}
        self._holders: dict[str, Holder] = {}
        self._plan = Plan([], [], {})
        self._seq = 0
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._dispatch, name="queue", daemon=True)

    # -- start-up and shutdown ---------------------------------------------------------------

    def load(self, sups: Iterable[SimulationSupervisor]) -> None:
        """Take the queue back from the registry: queued runs in their order, running
        runs as holders. A queued run's leftover run dir (its admission was cut short
        by a restart; recovery has killed any server in it) is removed."""
        rows = {sim_id: (seq, target) for sim_id, seq, target in self.registry.queue_rows()}
        self._seq = math.floor(max((seq for seq, _ in rows.values()), default=-1)) + 1
        for sup in sups:
            if sup.state == SimState.QUEUED:
                seq, target = rows.pop(sup.sim_id, (None, SimState.STARTED))
                if seq is None:
                    seq = self._next_seq()
                    self.registry.enqueue(sup.sim_id, seq, target)
                self._entries[sup.sim_id] = _entry(sup, target, seq,
                                                   sup.snapshot["updated_at"])
                if sup.run_dir.exists():
                    logger.warning("removing the leftover run dir of queued sim %s", sup.sim_id)
                    shutil.rmtree(sup.run_dir, ignore_errors=True)
            elif sup.state in ACTIVE_STATES:
                self._holders[sup.sim_id] = _holder(sup)
                if sup.state == SimState.INITIALIZED and \
                        rows.get(sup.sim_id, (None, None))[1] == SimState.STARTED:
                    del rows[sup.sim_id]
                    self._finish_admission(sup)
        for sim_id in rows:  # their records moved on; the row outlived them
            self.registry.dequeue(sim_id)
        if self._entries:
            logger.info("queue: %d queued, %d running after the restart", len(self._entries),
                        len(self._holders))

    def start(self) -> None:
        self._thread.start()
        self.wake()

    def close(self) -> None:
        self._closed = True
        self.wake()

    def wake(self) -> None:
        """A slot may have freed: run a pass now (safe from any thread, under any lock)."""
        self._wake.set()

    def _dispatch(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            try:
                self.run_pass()
            except Exception:
                logger.exception("queue: a pass failed")

    # -- requests ------------------------------------------------------------------------

    def check_fits(self, demand: Demand) -> None:
        """Raises: ExceedsHost: the run could never be admitted on this host."""
        reason = never_fits(demand, self.capacity)
        if reason is not None:
            raise ExceedsHost(reason)

    def check_priority(self, priority: int, identity: Any, current: int = 0) -> None:
        """Raises: Forbidden: raising a priority is not the caller's to do."""
        if priority > max(current, 0) and not self.policy.may_prioritise(identity):
            raise Forbidden("only operators and admins may raise a run's priority",
                            code="forbidden_priority")

    def submit(self, sup: SimulationSupervisor, target: SimState,
               requested_by: str | None = None) -> SimState:
        """Launch ``sup`` towards ``target`` if the host has room and nobody waits
        ahead of it; else queue it. Return the state it is in.

        Raises:
            UnknownState, InvalidTransition: the request is refused as by its lifecycle;
            ExceedsHost: it could never be admitted.
        """
        with self._lock:
            with sup.lifecycle.lock:
                if sup.state == SimState.QUEUED:
                    self._retarget(sup.sim_id, target)
                    return SimState.QUEUED
                if sup.state != SimState.CREATED:  # holds its slot already
                    return sup.lifecycle.request(target, requested_by=requested_by)
                sup.lifecycle.plan(target)                # refuse bad requests first
                entry = _entry(sup, target, self._next_seq(), utc_now())
                self.check_fits(entry.demand)
                self._prune()
                admit = plan([*self._entries.values(), entry], self._holders.values(),
                             self.capacity).admit
                if any(e is entry for e in admit):
                    self._holders[sup.sim_id] = _holder(sup)
                    state = sup.lifecycle.request(target, requested_by=requested_by)
                else:
                    self.registry.enqueue(sup.sim_id, entry.seq, target)  # before the record
                    self._entries[sup.sim_id] = entry
                    state = sup.lifecycle.fire("enqueue")
                    logger.info("queued: sim %s (%s, priority %d)", sup.sim_id,
                                owner_key(entry.owner), entry.priority)
            self.run_pass()
            return state

    def _retarget(self, sim_id: str, target: SimState) -> None:
        entry = self._entries.get(sim_id)
        if entry is not None and entry.target != target:
            entry.target = target
            self.registry.enqueue(sim_id, entry.seq, target)

    def change(self, sim_id: str, *, position: int | None = None, priority: int | None = None,
               identity: Any = None) -> dict[str, Any]:
        """Give a queued run a new priority and/or move it to ``position`` (0 first).

        Raises:
            NotQueued; Forbidden: not the caller's to do.
        """
        with self._lock:
            entry = self._entry_of(sim_id)
            if priority is not None:
                self.check_priority(priority, identity, entry.priority)
                entry.priority = priority
            if position is not None:
                self.check_priority(1, identity)  # moving is an operator's act
                changed = move(ordered(self._entries.values()), entry, position)
                self.registry.reorder([(e.sim_id, e.seq, e.target) for e in changed])
                self._seq = max(self._seq, math.floor(max(e.seq for e in changed)) + 1)
            saved = self._save_priority(entry)
            before = next(v for v in self._views() if v["id"] == sim_id)
            self.run_pass()
            view = self.entry(sim_id) if sim_id in self._entries else \
                {**before, "reason": "admitted"}  # it left the queue for a slot
        saved.wait(5.0)
        return view

    def _save_priority(self, entry: Entry) -> threading.Event:
        sup = self._find(entry.sim_id)
        if sup is None:
            done = threading.Event()
            done.set()
            return done
        return sup.mailbox.post_marked(functools.partial(sup.keeper.update,
                                                         priority=entry.priority))

    def _entry_of(self, sim_id: str) -> Entry:
        entry = self._entries.get(sim_id)
        if entry is None:
            raise NotQueued(f"simulation {sim_id} is not queued")
        return entry

    # -- admission -------------------------------------------------------------------

    def run_pass(self) -> None:
        """Drop what left the queue and the slots that freed; admit what fits."""
        with self._lock:
            self._prune()
            decided = plan(self._entries.values(), self._holders.values(), self.capacity)
            for entry in decided.admit:
                del self._entries[entry.sim_id]
                self._admit(entry)
            self._plan = decided

    def _prune(self) -> None:
        for sim_id in list(self._holders):
            sup = self._find(sim_id)
            if sup is None or sup.state.is_terminal:
                del self._holders[sim_id]
        for sim_id in list(self._entries):
            sup = self._find(sim_id)
            if sup is None or sup.state != SimState.QUEUED:
                del self._entries[sim_id]
                if sup is None:
                    self.registry.dequeue(sim_id)
                else:  # after its record says what it is now
                    sup.mailbox.post(self.registry.dequeue, sim_id)

    def _finish_admission(self, sup: SimulationSupervisor) -> None:
        """Start a run whose admission to ``started`` a restart cut between its two saves:
        its record says ``initialized``, and its queue row, removed only after both, still
        asks for ``started``. The row goes once the start is saved."""
        logger.info("starting: sim %s (its admission to started was cut short by a restart)",
                    sup.sim_id)
        with sup.lifecycle.lock:
            if sup.state == SimState.INITIALIZED:
                sup.lifecycle.fire("start")
        sup.mailbox.post(self.registry.dequeue, sup.sim_id)

    def _admit(self, entry: Entry) -> None:
        sup = self._find(entry.sim_id)
        if sup is None:
            return
        with sup.lifecycle.lock:
            if sup.state != SimState.QUEUED:
                return  # cancelled meanwhile
            sup.lifecycle.fire("admit")
            if entry.target == SimState.STARTED:
                sup.lifecycle.fire("start")
        self._holders[entry.sim_id] = _holder(sup)
        sup.mailbox.post(self.registry.dequeue, entry.sim_id)  # once it says initialized
        logger.info("admitted: sim %s (%s, threads %d, %.0f MiB)", entry.sim_id,
                    owner_key(entry.owner), entry.demand.threads, entry.demand.memory_mb)

    def _next_seq(self) -> int:
        seq, self._seq = self._seq, self._seq + 1
        return seq

    # -- views -------------------------------------------------------------------------

    def entry(self, sim_id: str) -> dict[str, Any]:
        """One queued run as ``GET /v1/queue/<id>`` shows it.

        Raises:
            NotQueued.
        """
        with self._lock:
            self._entry_of(sim_id)
            return next(v for v in self._views() if v["id"] == sim_id)

    def positions(self) -> dict[str, dict[str, Any]]:
        """``{id: {"position", "reason"}}`` of every queued run (for the records)."""
        with self._lock:
            return {v["id"]: {"position": v["position"], "reason": v["reason"]}
                    for v in self._views()}

    def view(self) -> dict[str, Any]:
        """The queue in order, what runs, what the host lends and has free."""
        with self._lock:
            holders = list(self._holders.values())
            return {
                "queue": self._views(),
                "running": [{"id": h.sim_id, "owner": h.owner, "threads": h.demand.threads,
                             "memory_mb": h.demand.memory_mb} for h in holders],
                "capacity": self.capacity.to_dict(),
                "free": {"threads": self.capacity.threads - sum(h.demand.threads
                                                                for h in holders),
                         "memory_mb": round(self.capacity.memory_mb -
                                            sum(h.demand.memory_mb for h in holders), 1)},
            }

    def _views(self) -> list[dict[str, Any]]:
        return [{"id": e.sim_id, "position": i, "priority": e.priority, "owner": e.owner,
                 "target": e.target.value, "threads": e.demand.threads,
                 "memory_mb": e.demand.memory_mb, "queued_at": e.queued_at,
                 "reason": self._plan.reasons.get(e.sim_id, "waiting for the next pass")}
                for i, e in enumerate(ordered(self._entries.values()))]


def _demand(snapshot: dict[str, Any]) -> Demand:
    return Demand(threads=int(snapshot.get("threads") or 1),
                  memory_mb=float(snapshot.get("memory_mb") or 0.0))


def _entry(sup: SimulationSupervisor, target: SimState, seq: int, queued_at: str) -> Entry:
    record = sup.snapshot
    return Entry(sup.sim_id, record.get("owner"), int(record.get("priority") or 0), seq,
                 target, _demand(record), queued_at)


def _holder(sup: SimulationSupervisor) -> Holder:
    return Holder(sup.sim_id, sup.snapshot.get("owner"), _demand(sup.snapshot))
