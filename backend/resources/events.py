"""Server-Sent Events: ``/v1/simulations/<id>/events`` and ``/v1/events``."""
from __future__ import annotations

from flask import Response, request
from flask_restful import Resource

from backend.events import Cursor
from backend.events.stream import AllStream, SimulationStream
from backend.resources import bool_arg
from backend.services import Services
from backend.wsgi_server import STREAM_CONTROL, StreamControl


def _last_event_id() -> str | None:
    """The client's position: the ``Last-Event-ID`` header (sent by a reconnecting
    EventSource), else ``?last_event_id=`` (a first connection cannot set headers)."""
    return request.headers.get("Last-Event-ID") or request.args.get("last_event_id")


def _answer(stream: SimulationStream | AllStream) -> Response:
    stream.open()
    response = Response(iter(stream), mimetype="text/event-stream")
    response.call_on_close(stream.close)
    # Proxies and browsers must neither cache nor buffer a stream.
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _control() -> StreamControl:
    """The connection's control (a stand-in outside waitress, e.g. Flask's test client)."""
    control = request.environ.get(STREAM_CONTROL) or StreamControl()
    control.limit_send_buffer()
    return control


class SimulationEvents(Resource):
    def __init__(self, services: Services) -> None:
        self.services = services

    def get(self, sim_id: str) -> Response:
        manager = self.services.manager
        manager.get(sim_id)  # 404 before anything else
        cursor = Cursor.parse(_last_event_id())
        stream = SimulationStream(
            manager, self.services.runtime.events, sim_id, cursor,
            logs=bool_arg("logs", True), status=bool_arg("status", True), control=_control(),
            max_lag=self.services.config.max_event_lag_bytes)
        if stream.told_all():
            return Response(status=204)
        return _answer(stream)


class AllEvents(Resource):
    def __init__(self, services: Services) -> None:
        self.services = services

    def get(self) -> Response:
        after = Cursor.parse_id(_last_event_id())
        return _answer(AllStream(
            self.services.manager, self.services.runtime.events, after,
            self.services.event_visibility(), status=bool_arg("status", True),
            control=_control(), max_lag=self.services.config.max_event_lag_bytes))
