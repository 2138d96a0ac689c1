"""The position of a simulation's event stream, sent as each event's SSE ``id``.

A stream interleaves persisted events (numbered by the registry) and log lines (addressed
by file and byte offset, re-read from the run directory or from storage), so its position
is both: ``"<event id>"`` followed by ``";<file>=<offset>"`` for every log file delivered
from, file names percent-encoded (``"17;simulation.log=4096;stdout.log=120"``). Sent back
as ``Last-Event-ID``, it resumes the stream exactly after what the client had.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote, unquote

from backend.exceptions import InvalidRequest

#: The longest ``Last-Event-ID`` taken (a few dozen log files' worth).
MAX_CURSOR = 4096
_PART = re.compile(r"([^;=]+)=([0-9]{1,18})")


@dataclass
class Cursor:
    event: int = 0
    logs: dict[str, int] = field(default_factory=dict)

    def format(self) -> str:
        parts = [str(self.event)]
        parts += [f"{_quoted(name)}={offset}" for name, offset in self.logs.items()]
        return ";".join(parts)

    @classmethod
    def parse(cls, raw: str | None) -> Cursor:
        """Raises: InvalidRequest: not a cursor this backend sent."""
        if raw is None or raw.strip() == "":
            return cls()
        first, *rest = raw.strip().split(";")
        if len(raw) > MAX_CURSOR or not re.fullmatch(r"[0-9]{1,18}", first):
            raise _bad(raw)
        logs = {}
        for part in rest:
            match = _PART.fullmatch(part)
            if match is None:
                raise _bad(raw)
            logs[unquote(match[1])] = int(match[2])
        return cls(int(first), logs)

    @classmethod
    def parse_id(cls, raw: str | None) -> int:
        """A plain event id (of ``/v1/events``).

        Raises: InvalidRequest.
        """
        cursor = cls.parse(raw)
        if cursor.logs:
            raise _bad(raw or "")
        return cursor.event


@lru_cache(maxsize=1024)
def _quoted(name: str) -> str:
    return quote(name, safe="")


def _bad(raw: str) -> InvalidRequest:
    return InvalidRequest(f"Last-Event-ID {raw[:80]!r} is not an event id of this stream",
                          code="invalid_event_id")
