"""A simulation's logs and results: listed and downloaded, live or from storage."""
from __future__ import annotations

import mimetypes
from typing import Any

from flask import Response, request
from flask_restful import Resource
from werkzeug.wsgi import wrap_file

from backend.paging import page
from backend.run_files import iter_chunks
from backend.resources import int_arg, page_args
from backend.services import Services
from lifecycle.messages import LOGS_DIR, RESULTS_DIR


class _FileList(Resource):
    kind = ""
    key = ""

    def __init__(self, services: Services) -> None:
        self.manager = services.manager

    def get(self, sim_id: str) -> dict[str, Any]:
        files = self.manager.list_files(sim_id, self.kind)
        found, cursor = page(files, lambda f: (f["name"],), *page_args())
        return {self.key: found, "next_cursor": cursor}


class _File(Resource):
    kind = ""

    def __init__(self, services: Services) -> None:
        self.manager = services.manager

    def get(self, sim_id: str, name: str) -> Response:
        offset, limit = int_arg("offset", 0), int_arg("limit")
        opened, name = self.manager.open_file(sim_id, self.kind, name, offset, limit)
        # A file of the run dir goes out through the WSGI server's file wrapper (waitress
        # sends it from the file); a stored one as its stream comes.
        body = wrap_file(request.environ, opened.file) if opened.local else \
            iter_chunks(opened)
        response = Response(body, direct_passthrough=True, mimetype=self.mimetype(name))
        # The length up front: a client can tell a whole download from one cut short.
        response.content_length = opened.size
        return response

    def mimetype(self, name: str) -> str:
        return mimetypes.guess_type(name)[0] or "application/octet-stream"


class LogList(_FileList):
    kind, key = LOGS_DIR, "logs"


class LogFile(_File):
    kind = LOGS_DIR

    def mimetype(self, name: str) -> str:
        return "text/plain"


class ResultList(_FileList):
    kind, key = RESULTS_DIR, "results"


class ResultFile(_File):
    kind = RESULTS_DIR
