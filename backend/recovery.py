"""Restart recovery: what a starting backend does with the simulations it finds.

For every simulation that held a server or still owes an upload: re-adopt its live
server (checked by the launcher and by the control token), or learn how it ended
from ``status.json``, or launch it again if a restart cut its launch short. Servers
and run directories that no record owns are killed and removed.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import Enum

from backend.control_client import ControlClient, ControlError
from backend.launchers import Exit, ServerHandle
from backend.limits import adopted
from backend.services import Runtime
from backend.supervisor import SimulationSupervisor
from lifecycle import ACTIVE_STATES
from lifecycle.messages import STATUS_FILE, ServerInfo
from storage.tree import remove_tree

logger = logging.getLogger(__name__)


class Recovery(Enum):
    """What became of one simulation at start-up."""

    NOTHING = "nothing"          # finished and uploaded
    ADOPTED = "adopted"          # its server lives on; followed again
    ENDED = "ended"              # its server is gone; decided from status.json
    RELAUNCH = "relaunch"        # the launch was cut short: launch again
    WIND_UP = "wind_up"          # finished, upload still due


def recover_all(runtime: Runtime, sups: Iterable[SimulationSupervisor]) -> dict[str, Recovery]:
    """Recover every simulation, then clean up what no record owns."""
    sups = list(sups)
    outcomes = {sup.sim_id: _recover_one(runtime, sup) for sup in sups}
    owned = {sup.sim_id: sup.server for sup in sups if sup.server is not None}
    runtime.launcher.clean_orphans(runtime.config.runs_dir, owned)
    _remove_orphan_run_dirs(runtime, {sup.sim_id for sup in sups})
    for sup in sups:
        if outcomes[sup.sim_id] is Recovery.RELAUNCH:
            sup.mailbox.post(_relaunch, sup)
    return outcomes


def recover(runtime: Runtime, sup: SimulationSupervisor) -> Recovery:
    """Decide what to do with one simulation; the work is posted to its mailbox."""
    state, uploaded = sup.state, sup.snapshot["logs_uploaded"]
    if state not in ACTIVE_STATES and (uploaded or not state.is_terminal):
        if uploaded and sup.run_dir.is_dir():
            # Uploaded and saved as such, then stopped or killed before its run dir went.
            logger.info("removing: the run dir of sim %s (uploaded already)", sup.sim_id)
            remove_tree(sup.run_dir)
        return Recovery.NOTHING
    info = runtime.launcher.server_info(sup.run_dir)
    handle = runtime.launcher.adopt(sup.sim_id, sup.run_dir, sup.exit_callback) \
        if info is not None and _answers_to(info, sup.sim_id) else None
    if handle is not None:
        sup.link.server = handle  # seen by the orphan sweep; the mailbox takes it from here
        sup.mailbox.post(_adopt, runtime, sup, handle, info)
        return Recovery.ADOPTED
    if not state.is_terminal and not (sup.run_dir / STATUS_FILE).exists():
        return Recovery.RELAUNCH
    return _gone(sup)


def _gone(sup: SimulationSupervisor) -> Recovery:
    """Wind up a simulation without a server: ended already, or to be ended from what
    its ``status.json`` says."""
    if sup.state.is_terminal:
        sup.done.clear()
        sup.mailbox.post(sup.wind_up_if_done)
        return Recovery.WIND_UP
    sup.mailbox.post(sup.exit_callback, None, Exit(None, None))
    return Recovery.ENDED


def _recover_one(runtime: Runtime, sup: SimulationSupervisor) -> Recovery:
    """:func:`recover`; but one simulation's trouble never keeps the backend from
    starting: it is ended as if its server were gone (the orphan sweep kills what it
    left), or, ended already, wound up."""
    try:
        return recover(runtime, sup)
    except Exception:
        logger.exception("sim %s: recovery failed; ending it as if its server were gone",
                         sup.sim_id)
    sup.link.server = None
    return _gone(sup)


def _adopt(runtime: Runtime, sup: SimulationSupervisor, handle: ServerHandle,
           info: ServerInfo) -> None:
    """Take over a live server, tell it what it missed (on the supervisor's mailbox)."""
    sup.link.server = handle
    sup.limits = adopted(runtime.config, sup.snapshot)
    sup.listening(info)
    if sup.lifecycle.is_terminal:
        sup.stop()
        return
    sup.commands.post(sup.link.adopted)
    sup.commands.post(sup.converge)


def _relaunch(sup: SimulationSupervisor) -> None:
    """Launch again a simulation whose launch a restart cut short (on its mailbox)."""
    logger.info("relaunching: sim %s (its launch was cut short by a restart)", sup.sim_id)
    remove_tree(sup.run_dir)
    sup.keeper.reset_status()
    sup.begin_launch()


def _answers_to(info: ServerInfo, sim_id: str) -> bool:
    """False if the process refuses the recorded token (it is not the one we started)."""
    client = ControlClient(info)
    try:
        client.status(timeout=2.0)
    except ControlError as exc:
        if exc.status == 401:
            logger.error("sim %s: pid %d refuses the recorded token; not adopting it",
                         sim_id, info.pid)
            return False
    finally:
        client.close()
    return True


def _remove_orphan_run_dirs(runtime: Runtime, known: set[str]) -> None:
    runs = runtime.config.runs_dir
    if not runs.is_dir():
        return
    for run_dir in runs.iterdir():
        if run_dir.name not in known:
            logger.warning("removing orphan run dir %s", run_dir)
            remove_tree(run_dir)
