"""``/ui/``: the web dashboard, static files shipped in the package (``backend/ui/``).

The files are plain HTML, CSS and JavaScript modules: no build step, nothing fetched
from elsewhere. In the browser they call the public REST API and its event streams with
the user's API key, like any other client; this module only serves them. An unknown file
is the API's JSON 404 (the error handler answers the ``NotFound`` raised here).
"""
from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, Response, send_from_directory

logger = logging.getLogger(__name__)

#: Where the dashboard's files are (package data).
UI_DIR = Path(__file__).resolve().parent / "ui"

#: Only the dashboard's own files may run or load: no inline script, no other origin.
#: Images may be blob URLs (result images are fetched with the key, then shown).
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob: data:; "
                           "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                           "form-action 'self'")

dashboard = Blueprint("dashboard", __name__)


@dashboard.route("/ui", strict_slashes=True)
def to_index() -> Response:
    """``/ui`` -> ``/ui/`` (relative links in the page need the slash); no HTML body.
    The location is relative, so it holds behind a proxy that serves us under a prefix."""
    return Response(status=308, headers={"Location": "ui/"})


@dashboard.route("/ui/")
def index() -> Response:
    return ui_file("index.html")


@dashboard.route("/ui/<file>")
def ui_file(file: str) -> Response:
    """One of the dashboard's files (never a folder, never outside ``UI_DIR``).

    Raises:
        werkzeug.exceptions.NotFound: no such file.
    """
    response = send_from_directory(UI_DIR, file, max_age=0)
    # Revalidated each time: a new release shows at once (ETag keeps it cheap).
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
