"""``/v1/experiments`` and ``/v1/experiments/<name>``."""
from __future__ import annotations

import shutil
import tempfile
from typing import Any

from flask import request
from flask_restful import Resource

from backend.archive import validate_name
from backend.auth import caller
from backend.exceptions import UnsupportedMediaType
from backend.paging import page
from backend.resources import page_args
from backend.services import Services

_ARCHIVE_TYPES = {"application/gzip", "application/x-gzip", "application/x-tar+gzip",
                  "application/octet-stream"}


class ExperimentList(Resource):
    def __init__(self, services: Services) -> None:
        self.store = services.experiments

    def get(self) -> dict[str, Any]:
        found, cursor = page(self.store.list(), lambda e: (e["name"],), *page_args())
        return {"experiments": found, "next_cursor": cursor}


class Experiment(Resource):
    def __init__(self, services: Services) -> None:
        self.store = services.experiments

    def get(self, name: str) -> dict[str, Any]:
        return self.store.describe(validate_name(name))

    def put(self, name: str) -> tuple[dict[str, Any], int]:
        validate_name(name)
        if request.mimetype not in _ARCHIVE_TYPES:
            raise UnsupportedMediaType(
                "send the experiment folder as a .tar.gz with "
                "'Content-Type: application/gzip'")
        with tempfile.SpooledTemporaryFile(max_size=16 << 20) as body:
            shutil.copyfileobj(request.stream, body, 1 << 20)
            body.seek(0)
            created = self.store.put_archive(name, body, caller().name)
        return self.store.describe(name), 201 if created else 200

    def delete(self, name: str) -> tuple[str, int]:
        self.store.delete(validate_name(name))
        return "", 204
