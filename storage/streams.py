"""Readers that cut or check the length of another stream.

Used for ranged reads of local files and to enforce the declared size of an
upload. Both are wrapped in :class:`io.BufferedReader` because consumers such as
s3transfer take a short ``read(n)`` for the end of the stream.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from storage.errors import StorageError


class _LimitedRaw(io.RawIOBase):
    """Raw reader passing through at most `limit` bytes of `source`.

    With ``exact=True`` the source must hold exactly `limit` bytes: reaching its
    end early, or finding more, raises StorageError.
    """

    def __init__(
        self, source: BinaryIO, limit: int | None, *, exact: bool, owns_source: bool
    ) -> None:
        super().__init__()
        self._source = source
        self._limit = limit
        self._remaining = limit
        self._exact = exact
        self._owns_source = owns_source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        wanted = len(buffer) if self._remaining is None else min(len(buffer), self._remaining)
        data = self._source.read(wanted) if wanted else b""
        if not data:
            self._check_end()
            return 0
        buffer[: len(data)] = data
        if self._remaining is not None:
            self._remaining -= len(data)
        return len(data)

    def close(self) -> None:
        if self._owns_source and not self.closed:
            self._source.close()
        super().close()

    def _check_end(self) -> None:
        """Raise if an exact-size source ended early or holds more bytes."""
        if not self._exact or self._limit is None:
            return
        if self._remaining:
            raise StorageError(
                f"stream ended after {self._limit - self._remaining} bytes, "
                f"{self._limit} were declared"
            )
        if self._source.read(1):
            raise StorageError(f"stream holds more than the {self._limit} bytes declared")


def read_range(source: BinaryIO, length: int | None) -> BinaryIO:
    """Return a stream of the next `length` bytes of `source` (all if None); closes `source`."""
    return io.BufferedReader(_LimitedRaw(source, length, exact=False, owns_source=True))


def exact_size(source: BinaryIO, size: int | None) -> BinaryIO:
    """Return a stream of `source` that raises unless it holds exactly `size` bytes.

    With `size` None nothing is checked. Closing the result leaves `source` open:
    it belongs to the caller.

    Raises:
        StorageError: while reading, once the length is known to differ.
    """
    return io.BufferedReader(_LimitedRaw(source, size, exact=True, owns_source=False))
