"""The HTTP front: waitress, set up deliberately for a hostile network.

Waitress's defaults let 100 idle sockets lock everyone out until its two-minute idle
timeout, parse a chunk-size line that never ends in time quadratic in its length on
the one I/O thread, and answer its own errors in plain text. Here:

- when every connection slot is taken, the connection idle the longest is closed to
  make room (one that a worker is serving is never closed), so idle or slow sockets
  cannot keep ``/health`` out;
- chunked request bodies are refused (411) except on the routes that take uploads,
  and there a chunk-size line or trailer longer than a few KiB ends the request;
- header and body sizes, idle timeouts and the poll loop are set from the config;
- the errors waitress answers itself are the API's JSON errors;
- worker threads are started as requests need them, up to the configured number
  (requests plus event streams: 288 by default), not all at start.

Behind a reverse proxy (see README.rst) these are a second line of defence.
"""
from __future__ import annotations

import logging
import socket
import sys
import time
from typing import Any

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.receiver import ChunkedReceiver
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask
from waitress.utilities import BadRequest, Error

from backend.config import Config
from backend.errors import error_body, slug

logger = logging.getLogger(__name__)

#: Paths (by prefix, for PUT) whose bodies may come chunked: experiment uploads, which
#: ``curl -T -`` or a streaming client send without a length.
CHUNKED_PATHS = ("/v1/experiments/",)
#: A chunk-size line is a hex number and maybe an extension: a few bytes in practice.
MAX_CHUNK_LINE = 4096
MAX_TRAILER = 16384
# Evictions come in floods during an attack: log a running count at most this often.
_EVICTION_LOG_INTERVAL = 10.0


class LengthRequired(Error):
    code = 411
    reason = "Length Required"


class _BoundedChunkedReceiver(ChunkedReceiver):
    """waitress's receiver re-scans the whole pending control line on every read
    (quadratic in its length): stop once the line is longer than any real one."""

    def received(self, s: bytes) -> int:
        consumed = super().received(s)
        if len(self.control_line) > MAX_CHUNK_LINE or len(self.trailer) > MAX_TRAILER:
            self.error = BadRequest(f"a chunk-size line or trailer is longer than "
                                    f"{MAX_CHUNK_LINE} bytes")
            self.all_chunks_received = True
        return consumed


class _GuardedParser(HTTPRequestParser):
    """Refuse chunked bodies where no route takes them, bound them where one does."""

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        if not self.chunked:
            return
        if self.command == "PUT" and self.path.startswith(CHUNKED_PATHS):
            self.body_rcv = _BoundedChunkedReceiver(self.body_rcv.buf)
            return
        # Dropping the receiver completes the request at the end of its headers; the
        # error answer closes the connection, discarding whatever body follows.
        self.body_rcv = None
        self.error = LengthRequired("send this request with a Content-Length: chunked "
                                    "bodies are taken only by experiment uploads")


class _JsonErrorTask(ErrorTask):
    """waitress's own error answers (400, 411, 413, 431, ...) in the API's JSON shape."""

    def execute(self) -> None:
        error = self.request.error
        body = error_body(slug(error.reason), error.body)
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


#: The WSGI environ key of the request's :class:`StreamControl`.
STREAM_CONTROL = "simbackend.stream_control"
#: The kernel's send buffer of an event stream's connection: loopback autotuning would
#: let a client that reads nothing swallow megabytes before it looks behind.
STREAM_SEND_BUFFER = 64 * 1024


class StreamControl:
    """What a long answer (an event stream) may know of its connection."""

    def __init__(self, channel: HTTPChannel | None = None) -> None:
        self._channel = channel

    def unsent(self) -> int:
        """Bytes answered that waitress holds because the client has not read them yet."""
        return self._channel.total_outbufs_len if self._channel is not None else 0

    def disconnected(self) -> bool:
        """The client has closed the connection (seen while a request runs thanks to
        ``channel_request_lookahead``)."""
        return self._channel is not None and not self._channel.connected

    def limit_send_buffer(self) -> None:
        if self._channel is not None:
            try:
                self._channel.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                STREAM_SEND_BUFFER)
            except OSError:
                pass  # closed meanwhile: the stream ends at its next write


class _Task(WSGITask):
    def get_environment(self) -> dict[str, Any]:
        environ = super().get_environment()
        environ[STREAM_CONTROL] = StreamControl(self.channel)
        return environ


class _Channel(HTTPChannel):
    parser_class = _GuardedParser
    error_task_class = _JsonErrorTask
    task_class = _Task


class GrowingDispatcher(ThreadedTaskDispatcher):
    """waitress's worker pool, grown on demand: a thread is started when a task finds
    none idle, up to ``most``; started threads stay until shutdown.

    waitress starts all of them at once, and the backend's are mostly for event streams
    that may never come: 288 threads took ~40 ms to start and ~15 ms to stop, on every
    start and stop of the backend, and filled every thread dump.
    """

    def __init__(self, most: int) -> None:
        super().__init__()
        self.most = most

    def set_thread_count(self, count: int) -> None:
        # Only shutdown's set_thread_count(0) comes here: growing is add_task's.
        if count < len(self.threads) - self.stop_count:
            super().set_thread_count(count)

    def add_task(self, task: Any) -> None:
        with self.lock:
            self.queue.append(task)
            running = len(self.threads) - self.stop_count
            waiting = len(self.queue) - (running - self.active_count)
            # Not while shutting down: a new thread would take an old one's stop.
            if waiting > 0 and running < self.most and not self.stop_count:
                number = min(set(range(len(self.threads) + 1)) - self.threads)
                self.threads.add(number)
                self.active_count += 1  # as waitress counts a thread until it first waits
                self.start_new_thread(self.handler_thread, number)
                waiting -= 1
            self.queue_cv.notify()
            if waiting > 0:  # every thread is busy: the task waits for one
                self.queue_logger.warning("Task queue depth is %d", waiting)


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server that makes room for a new connection instead of refusing it."""

    channel_class = _Channel
    _evicted = 0
    _evictions_logged_at = 0.0

    def readable(self) -> bool:
        # waitress's readable() stops accepting at the limit; keep its idle sweep only.
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return bool(self.accepting)

    def handle_accept(self) -> None:
        if len(self.active_channels) >= self.adj.connection_limit and not self._evict_idle():
            # Every slot is busy serving a request: take the connection and close it at
            # once rather than leave it queued in the backlog for an unknown time.
            accepted = self.accept()
            if accepted is not None:
                accepted[0].close()
            return
        super().handle_accept()

    def _evict_idle(self) -> bool:
        """Close the connection idle the longest that no worker is serving; False if none."""
        idle = [c for c in self.active_channels.values() if not c.requests]
        if not idle:
            return False
        oldest = min(idle, key=lambda channel: channel.last_activity)
        oldest.handle_close()
        self._evicted += 1
        now = time.monotonic()
        if now - self._evictions_logged_at > _EVICTION_LOG_INTERVAL:
            logger.warning("evicted: %d idle connections so far to stay under the limit of %d",
                           self._evicted, self.adj.connection_limit)
            self._evictions_logged_at = now
        return True


def server_settings(config: Config) -> dict[str, Any]:
    """waitress adjustments from the config (each one a decision, not a default)."""
    return {
        # Each event stream holds a worker thread while it is open: the streams get threads
        # of their own, so they never take the ones requests need.
        "host": config.host, "port": config.port,
        "threads": config.threads + config.max_event_streams,
        "ident": "simbackend", "clear_untrusted_proxy_headers": True,
        "connection_limit": config.connection_limit,
        "channel_timeout": config.channel_timeout,
        # Idle connections are found by a sweep: run it often enough to honour the timeout.
        "cleanup_interval": max(1.0, min(30.0, config.channel_timeout / 2)),
        "max_request_header_size": config.max_header_bytes,
        # The largest body any route takes is an archive (waitress refuses >= this).
        "max_request_body_size": config.max_archive_bytes + 1,
        # Bodies above this go to a temp file under the data dir's umask, not to memory.
        "inbuf_overflow": 1 << 20,
        # poll(): select() cannot watch file descriptors above 1024.
        "asyncore_use_poll": True,
        "expose_tracebacks": False,
        # Keep reading while a request runs, so a client that goes away is noticed
        # (an event stream ends then, instead of at its next heartbeat).
        "channel_request_lookahead": 1,
    }


def create_server(app: Any, config: Config) -> GuardedServer:
    """Bind the backend's server (it serves once ``run()`` is called)."""
    # A CPU-bound request thread (unpacking an archive) holds the GIL up to the switch
    # interval at a time, and answering /health needs several hand-offs between the
    # I/O thread and a worker: 1 ms instead of 5 keeps it answering in milliseconds.
    sys.setswitchinterval(0.001)
    settings = server_settings(config)
    return GuardedServer(app, dispatcher=GrowingDispatcher(settings["threads"]), **settings)


__all__ = ["CHUNKED_PATHS", "STREAM_CONTROL", "GrowingDispatcher", "GuardedServer",
           "StreamControl", "create_server", "server_settings"]
