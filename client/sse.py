"""Reading Server-Sent Events, resuming by ``Last-Event-ID`` when the connection is lost
or the backend drops a stream that fell behind."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator

import requests


@dataclass(frozen=True)
class Event:
    """One event: ``type`` (state, status, log, server_state, end, dropped, deleted,
    error), its ``data``, and its ``id`` (the position to resume from; None for events
    that are not replayed, such as status ticks)."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    @property
    def sim_id(self) -> str | None:
        return self.data.get("sim_id")


def parse(response: requests.Response) -> Iterator[Event]:
    """The events of a ``text/event-stream`` answer, as they arrive."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for raw in response.iter_lines(chunk_size=None):
        line = raw.decode("utf-8", "replace")
        if not line:
            if "event" in fields or data:
                payload = json.loads("\n".join(data)) if data else {}
                yield Event(fields.get("event", "message"), payload, fields.get("id"))
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue  # a comment: the heartbeat
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
