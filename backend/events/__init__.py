"""Live events of simulations, served as Server-Sent Events.

- :mod:`backend.events.hub`: the fan-out. Supervisors publish (from their mailboxes) the
  events they persist, the pump thread the log lines and status ticks it reads; every
  subscriber has a bounded queue and is dropped, never waited for, when it falls behind.
- :mod:`backend.events.cursor`: the ``Last-Event-ID`` of a simulation's stream: the last
  persisted event and, for each log file, the byte offset delivered up to.
- :mod:`backend.events.logs`: reading a simulation's log files line by line from an offset.
- :mod:`backend.events.stream`: one subscriber's stream: replay from its cursor, then live
  events, each exactly once.
"""
from backend.events.cursor import Cursor
from backend.events.hub import Event, EventHub, Subscription

__all__ = ["Cursor", "Event", "EventHub", "Subscription"]
