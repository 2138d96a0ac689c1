"""A TCP proxy on loopback that delays every byte by a fixed time in each direction.

    python -m benchmarks.latency_proxy LISTEN_PORT TARGET_HOST:PORT ONE_WAY_SECONDS

With 0.010 s each way a request and its answer take 20 ms more than without it, as
with object storage a few network hops away. Bandwidth is not limited: data is
forwarded as it arrives, just later, in order. Prints ``ready`` once it listens;
stop it with SIGTERM. Built on asyncio protocols and timers (no task per chunk), so
the proxy itself costs little CPU next to the server it fronts.
"""
from __future__ import annotations

import asyncio
import signal
import sys


class _Side(asyncio.Protocol):
    """One end of a proxied connection: what it receives reaches its peer `delay` s later."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self._early: list[bytes | None] = []  # received before the peer was connected
        self._last_due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._forward(data)

    def eof_received(self) -> bool:
        self._forward(None)
        return True  # keep our writing half open until the peer's data has gone out

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self._later(self.peer.transport.close)

    # Flow control: when our transport's buffer fills, stop reading from the peer.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def attach(self, peer: _Side) -> None:
        """Pair with `peer` and pass on what arrived before it was there."""
        self.peer = peer
        for data in self._early:
            self._forward(data)
        self._early.clear()

    def _forward(self, data: bytes | None) -> None:
        if self.peer is None or self.peer.transport is None:
            self._early.append(data)
            return
        transport = self.peer.transport
        if data is None:
            self._later(lambda: transport.can_write_eof() and transport.write_eof())
        else:
            self._later(lambda: transport.is_closing() or transport.write(data))

    def _later(self, action: object) -> None:
        """Run `action` after the delay, never before an earlier one (timers with equal
        times may run in any order)."""
        loop = asyncio.get_running_loop()
        due = max(loop.time() + self.delay, self._last_due + 1e-6)
        self._last_due = due
        loop.call_at(due, action)


async def _connect(client: _Side, target: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    try:
        _, upstream = await loop.create_connection(lambda: _Side(client.delay), *target)
    except OSError:
        client.transport.close()
        return
    upstream.attach(client)
    client.attach(upstream)


async def serve(port: int, target: tuple[str, int], delay: float) -> None:
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task] = set()

    def accept() -> _Side:
        client = _Side(delay)
        # The transport is set right after this returns; connect on the next turn.
        task = loop.create_task(_connect(client, target))
        pending.add(task)
        task.add_done_callback(pending.discard)
        return client

    server = await loop.create_server(accept, "127.0.0.1", port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    port, target, delay = sys.argv[1:4]
    host, _, target_port = target.rpartition(":")
    asyncio.run(serve(int(port), (host, int(target_port)), float(delay)))


if __name__ == "__main__":
    main()
