"""Where the backend is and how to authenticate: flags, then ``SIMBACKEND_URL`` and
``SIMBACKEND_TOKEN``, then what a backend on this machine left in its data dir
(``backend.json``'s address, the admin key ``admin.key``)."""
from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:8642"
ADMIN_KEY_FILE = "admin.key"
ADDRESS_FILE = "backend.json"


def default_data_dir() -> Path:
    """A per-user data folder (``$XDG_DATA_HOME/simbackend``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "simbackend"


def data_dir() -> Path:
    """The data dir of a backend on this machine (``SIMBACKEND_DATA_DIR`` or the default)."""
    return Path(os.environ.get("SIMBACKEND_DATA_DIR") or default_data_dir()).expanduser()


def resolve_url(url: str | None = None) -> str:
    if url:
        return url.rstrip("/")
    if os.environ.get("SIMBACKEND_URL"):
        return os.environ["SIMBACKEND_URL"].rstrip("/")
    try:
        return str(json.loads((data_dir() / ADDRESS_FILE).read_text())["url"]).rstrip("/")
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_URL


def resolve_token(token: str | None = None, url: str | None = None) -> str | None:
    """The token to send to ``url``: the one given, ``SIMBACKEND_TOKEN``, else the admin key
    of a backend on this machine, but only to a loopback ``url`` (never off the host)."""
    if token:
        return token
    if os.environ.get("SIMBACKEND_TOKEN"):
        return os.environ["SIMBACKEND_TOKEN"]
    if url is not None and not is_loopback(urlsplit(url).hostname or ""):
        return None
    try:
        return (data_dir() / ADMIN_KEY_FILE).read_text().strip() or None
    except OSError:
        return None


def is_loopback(host: str) -> bool:
    """Is ``host`` (an address, ``[v6]`` or ``localhost``) this machine's loopback?"""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
