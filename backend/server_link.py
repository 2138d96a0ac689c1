"""The backend's hold on one simulation server: its handle, its control connection,
the state it is in, and how to stop it.

A :class:`ServerLink` belongs to one supervisor. Its commands, the server's events and
the stop run on the supervisor's ``commands`` mailbox, one at a time, so a slow server
never holds up a save of the record; the record's mailbox only connects, records the
exit and disconnects. :meth:`ServerLink.status` is the one method other threads call
(it only reads).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

from backend.control_client import ControlClient, ControlError
from backend.launchers import Launcher, ServerHandle
from backend.status import follow_events, live_status
from client.settings import is_loopback
from lifecycle import SimState
from lifecycle.clock import RunningTime
from lifecycle.messages import ServerInfo, next_command

logger = logging.getLogger(__name__)

# Commands needed at most to converge: initialized -> started -> paused.
_MAX_COMMANDS = 3


class ServerLink:
    """Handle, control client and last known state of one simulation server."""

    def __init__(self, sim_id: str, run_dir: Path, launcher: Launcher,
                 stop_grace: float) -> None:
        self.sim_id = sim_id
        self.run_dir = run_dir
        self.launcher = launcher
        self.grace = stop_grace
        self.server: ServerHandle | None = None
        self.client: ControlClient | None = None
        self.live_dir: Path | None = None     # where its live status is, if here
        self.state: SimState | None = None
        self._seq = 0                          # the event seq ``state`` stems from
        self.running = RunningTime()           # seconds the server has been started
        self.ready = threading.Event()         # it has built its kernel

    @property
    def alive(self) -> bool:
        return self.server is not None and not self.server.exited.is_set()

    def connect(self, info: ServerInfo, deliver: Callable[[dict[str, Any]], None]) -> None:
        """Open the control connection and follow the server's events into ``deliver``."""
        self.client = ControlClient(info)
        # A server on a loopback address is on this host: its live status is in shared
        # memory, in the run dir (a run dir shared with another host is not).
        self.live_dir = self.run_dir if is_loopback(info.host) else None
        follow_events(self.sim_id, self.client, self.server, self.ready, deliver)

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def status(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        return live_status(snapshot, self.client, self.server, self.state, self.live_dir)

    def at(self, state: SimState, seq: int) -> None:
        """The server is in ``state`` as of its event ``seq`` (older news is ignored)."""
        if seq < self._seq:
            return  # an event older than what a command reply told us
        self.state, self._seq = state, seq
        if state == SimState.STARTED:
            self.running.run()
        else:
            self.running.hold()

    def adopted(self) -> None:
        """Take over the server's own account after a backend restart."""
        self.ready.set()
        try:
            status = self.client.status()
        except ControlError:
            return  # its events or its exit will tell
        self.state = SimState(status["state"])
        self.running.reset(float(status.get("real_time") or 0.0), self.state == SimState.STARTED)

    def converge(self, wanted: SimState) -> None:
        """Send the commands that bring the server to ``wanted``."""
        for _ in range(_MAX_COMMANDS):
            command, client = next_command(self.state, wanted), self.client
            if command is None or client is None:
                return
            try:
                reply = client.command(command)
            except ControlError as exc:
                # The server may have ended meanwhile; its event or exit decides.
                logger.info("sim %s: command %s not applied: %s", self.sim_id, command, exc)
                return
            self.at(SimState(reply["state"]), reply.get("seq", self._seq))

    def stop(self) -> None:
        """Ask the server to stop inside ``run_loop``; terminate it if it does not."""
        client = self.client
        if not self.alive:
            return
        if client is None:
            self.escalate_after(0.0)
            return
        try:
            self.state = SimState(client.command("stop", timeout=2.0)["state"])
        except ControlError as exc:
            logger.info("sim %s: graceful stop not delivered: %s", self.sim_id, exc)
        self.escalate_after(self.grace)

    def escalate_after(self, delay: float, grace: float | None = None) -> None:
        """Terminate the server unless it is gone within ``delay`` s (on a thread of its
        own: the signals and the waits never hold up the mailbox)."""
        server, grace = self.server, self.grace if grace is None else grace

        def escalate() -> None:
            if server is not None and not server.exited.wait(delay):
                self.launcher.terminate(server, grace)

        threading.Thread(target=escalate, name=f"stop-{self.sim_id}", daemon=True).start()

