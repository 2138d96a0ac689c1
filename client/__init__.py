"""The Python client of simbackend, and the ``simbackend`` command-line verbs built on it.

Needs only ``requests`` (and ``rich`` for the command line's progress bar): no Flask,
no NEST. ::

    from client import Client

    sims = Client("http://127.0.0.1:8642", token)
    sims.push_experiment("examples/hello")
    sim = sims.create("hello", params={"damping": 0.3}, state="started")
    for event in sims.events(sim["id"]):
        print(event.type, event.data)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.api import Client, SimbackendError
    from client.sse import Event

__all__ = ["Client", "Event", "SimbackendError"]


def __getattr__(name: str) -> Any:
    # Imported when first asked for: the backend, which shares ``client.settings``,
    # need not import requests.
    if name in ("Client", "SimbackendError"):
        from client import api
        return getattr(api, name)
    if name == "Event":
        from client.sse import Event
        return Event
    raise AttributeError(f"module 'client' has no attribute {name!r}")
