"""A simulation's logs and results: listed and downloaded, live or from storage."""
from __future__ import annotations

import mimetypes
from typing import Any

from flask import Response, request
from flask_restful import Resource
from werkzeug.wsgi import wrap_file

from backend.paging import page
from backend.run_files import LocalFile, iter_chunks
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
        stream, name = self.manager.open_file(sim_id, self.kind, name, offset, limit)
        if not isinstance(stream, LocalFile):  # from storage: as its stream comes
            return Response(iter_chunks(stream), mimetype=self.mimetype(name))
        # A file of the run dir: its length up front (a client knows the download is
        # whole), sent by the WSGI server from the file (waitress's file wrapper).
        response = Response(wrap_file(request.environ, stream.file), direct_passthrough=True,
                            mimetype=self.mimetype(name))
        response.content_length = stream.size
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
