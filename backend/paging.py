"""Pages of a listing: ``?limit=&cursor=`` on every list the API answers.

A cursor is opaque to clients: the sort key of the last item of the page, encoded. The
next page holds the items after it, so items created or removed meanwhile neither
repeat nor shift what follows.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Callable, Sequence

from backend.exceptions import InvalidRequest

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def encode_cursor(key: Sequence[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[str]:
    """Raises: InvalidRequest: not a cursor this API gave."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError):
        key = None
    if not isinstance(key, list) or not all(isinstance(k, str) for k in key):
        raise InvalidRequest("'cursor' is not a cursor this API gave", code="invalid_argument")
    return key


def page(items: list[dict[str, Any]], key: Callable[[dict[str, Any]], Sequence[str]],
         limit: int | None, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """The page of ``items`` (sorted by ``key``) after ``cursor``, and the next cursor
    (None on the last page).

    Raises:
        InvalidRequest: a limit outside 1..MAX_LIMIT or a bad cursor.
    """
    limit = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"'limit' must be between 1 and {MAX_LIMIT}",
                             code="invalid_argument")
    ordered = sorted(items, key=lambda item: list(key(item)))
    if cursor:
        after = decode_cursor(cursor)
        ordered = [item for item in ordered if list(key(item)) > after]
    chosen = ordered[:limit]
    more = len(ordered) > limit
    return chosen, encode_cursor(key(chosen[-1])) if more else None
