"""A mailbox: calls run one at a time, in the order posted, on a thread of its own.

Each simulation's supervisor does all its work through one, so exactly one thread
at a time touches a simulation's record and process. The thread exists only while
there is work and for :data:`LINGER` s after: thousands of finished simulations cost
no threads.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

logger = logging.getLogger(__name__)


#: An idle mailbox keeps its thread this long: a running simulation's record and server
#: get work many times a second, and starting a thread for each burst costs more than
#: the work (it hands the GIL back and forth under load).
LINGER = 2.0


class MailboxTimeout(Exception):
    """A :meth:`Mailbox.call` did not run in time; it was withdrawn."""


class Mailbox:
    """Runs posted callables serially. A callable that raises is logged and the
    ``on_error`` hook (if any) is called with it; the mailbox goes on."""

    def __init__(self, name: str, on_error: Callable[[Callable, Exception], None] | None = None,
                 linger: float = LINGER) -> None:
        """``linger``: s an idle thread waits for more work before it ends."""
        self.name = name
        self.linger = linger
        self._on_error = on_error
        self._calls: deque[tuple[Callable, tuple]] = deque()
        self._lock = threading.Lock()
        self._more = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def post(self, func: Callable, *args: Any) -> None:
        """Queue ``func(*args)``; it runs after everything posted before it."""
        self._post(func, args)

    def post_marked(self, func: Callable, *args: Any) -> threading.Event:
        """Like :meth:`post`; the event returned is set once ``func`` has run (or failed)."""
        ran = threading.Event()

        def run() -> None:
            try:
                func(*args)
            finally:
                ran.set()

        run.__name__ = getattr(func, "__name__", "call")
        self._post(run, ())
        return ran

    def _post(self, func: Callable, args: tuple) -> None:
        with self._lock:
            self._calls.append((func, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            else:
                self._more.notify()

    def call(self, func: Callable, *args: Any, timeout: float) -> Any:
        """Run ``func(*args)`` on the mailbox and return its result (or raise its error).

        Raises:
            MailboxTimeout: it did not start within ``timeout`` s; it will not run.
        """
        if self.on_thread():
            return func(*args)
        future: Future = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(func(*args))
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)

        self.post(run)
        try:
            return future.result(timeout)
        except FutureTimeout:
            if future.cancel():
                raise MailboxTimeout(f"{self.name} is busy") from None
            return future.result()  # started meanwhile: wait for it to finish

    def sync(self, timeout: float) -> bool:
        """Wait until everything posted so far has run; False if it took too long."""
        try:
            self.call(lambda: None, timeout=timeout)
        except MailboxTimeout:
            return False
        return True

    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._calls:
                    self._more.wait(self.linger)
                if not self._calls:
                    self._thread = None
                    return
                func, args = self._calls.popleft()
            try:
                func(*args)
            except Exception as exc:
                logger.exception("%s: %s failed", self.name, getattr(func, "__name__", func))
                if self._on_error is not None:
                    self._on_error(func, exc)
