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
from client.api import Client, SimbackendError
from client.sse import Event

__all__ = ["Client", "Event", "SimbackendError"]
