"""S3Storage: objects in an S3 bucket (AWS, MinIO, Ceph) under an optional prefix.

boto3 is imported only when an S3Storage is built, so the package works
without it. Credentials, region and endpoint come from boto3's standard
resolution (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, profiles, ...).
"""

from __future__ import annotations

import builtins  # `list` is a method of S3Storage, so annotations in the class use builtins.list
import contextlib
import io
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from storage.atomic import atomic_write
from storage.base import ObjectInfo, Opened, Storage, check_range
from storage.errors import InvalidKey, ObjectNotFound, StorageError, StorageUnavailable
from storage.keys import validate_key, validate_prefix
from storage.streams import exact_size

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
# Defaults for every S3 request: seconds to connect, seconds without a byte from
# the server, and retries after the first attempt. Short enough that an outage
# shows in seconds, not minutes; the backend makes them configurable.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 5.0
RETRIES = 3
# Pooled connections per client: parallel folder transfers times multipart threads
# must not open and drop a connection per request.
_POOL_CONNECTIONS = 32
_COPY_CHUNK = MIB
# One DeleteObjects request takes at most this many keys.
_DELETE_BATCH = 1000
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_DENIED_CODES = {
    "403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
}


def default_client(
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    retries: int = RETRIES,
) -> Any:
    """Return an S3 client with bounded timeouts and `retries` retries (standard backoff).

    A fresh session per client, because boto3's default session is not thread-safe.

    Raises:
        ValueError: if a timeout is not positive or `retries` is negative.
    """
    import boto3
    from botocore.config import Config

    if connect_timeout <= 0 or read_timeout <= 0 or retries < 0:
        raise ValueError(
            "S3 timeouts must be positive and retries not negative: "
            f"connect_timeout={connect_timeout}, "
            f"read_timeout={read_timeout}, retries={retries}"
        )
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": retries + 1, "mode": "standard"},
        max_pool_connections=_POOL_CONNECTIONS,
    )
    return boto3.session.Session().client("s3", config=config)


class S3Storage(Storage):
    """Objects stored in `bucket`, the key ``a/b`` at ``<prefix>/a/b``.

    `client` is a boto3 S3 client; by default one from :func:`default_client`
    with the given timeouts and retries. :meth:`check` then uses a second client
    without retries, so a readiness probe answers within one timeout.

    Raises:
        StorageError: if boto3 is missing or the bucket name is invalid.
        ValueError: for a non-positive timeout or negative retries.
    """

    # Fetching is latency-bound: more requests in flight hide more round trips.
    transfer_workers = 16

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        retries: int = RETRIES,
    ) -> None:
        try:
            from boto3.exceptions import S3UploadFailedError
            from boto3.s3.transfer import TransferConfig
            from botocore import exceptions
        except ImportError as exc:
            raise StorageError(f"S3 storage needs boto3, which is not installed: {exc}") from exc

        if not bucket or "/" in bucket:
            raise StorageError(f"invalid S3 bucket name {bucket!r}")
        self.bucket = bucket
        self.prefix = validate_prefix(prefix)
        if client is None:
            client = default_client(connect_timeout, read_timeout, retries)
            self._probe_client = default_client(connect_timeout, read_timeout, 0)
        else:
            self._probe_client = client
        self.client = client
        # Parts of 8 MiB, 10 in flight: boto3's defaults, pinned to the classic
        # (pure Python) transfer client so every request keeps the client's timeouts.
        self._transfer = TransferConfig(
            multipart_threshold=8 * MIB,
            multipart_chunksize=8 * MIB,
            preferred_transfer_client="classic",
        )
        self._botocore_errors = exceptions
        self._upload_failed = S3UploadFailedError

    def describe(self) -> str:
        return (
            f"s3://{self.bucket}/{quote(self.prefix[:-1])}"
            if self.prefix
            else f"s3://{self.bucket}"
        )

    def check(self) -> None:
        """Probe the bucket with HeadBucket.

        Raises:
            StorageUnavailable: if the endpoint, the bucket or the credentials fail.
        """
        with self._errors(None):
            self._probe_client.head_bucket(Bucket=self.bucket)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        folder = validate_prefix(prefix)
        infos = []
        with self._errors(None):
            for name, size in self._iter_objects(self.prefix + folder):
                info = self._info(name, size)
                if info is not None:
                    infos.append(info)
        return sorted(infos, key=lambda info: info.key)

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        with self._errors(key):
            response = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        return ObjectInfo(key, response["ContentLength"])

    def open_sized(self, key: str, offset: int = 0, length: int | None = None) -> Opened:
        """Open a ranged GET of the object; the stream is the HTTP response body, its
        size the response's Content-Length."""
        validate_key(key)
        check_range(offset, length)
        if length == 0:
            self.stat(key)  # still report a missing object
            return Opened(io.BytesIO(), 0)
        request = {"Bucket": self.bucket, "Key": self.prefix + key}
        if offset or length is not None:
            last = "" if length is None else str(offset + length - 1)
            request["Range"] = f"bytes={offset}-{last}"
        with self._errors(key):
            try:
                response = self.client.get_object(**request)
                return Opened(response["Body"], response["ContentLength"])
            except self._botocore_errors.ClientError as exc:
                if _error_code(exc) != "InvalidRange":
                    raise
        return Opened(io.BytesIO(), 0)  # the range starts at or past the end

    def read_bytes(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        with self._errors(key), self.open_read(key, offset, length) as stream:
            return stream.read()

    def put_stream(self, key: str, stream: BinaryIO, size: int | None = None) -> None:
        validate_key(key)
        with self._errors(key):
            self.client.upload_fileobj(
                exact_size(stream, size), self.bucket, self.prefix + key, Config=self._transfer
            )
        logger.debug("uploaded: %s to %s", key, self.describe())

    def upload_file(self, path: Path, key: str) -> None:
        validate_key(key)
        with self._errors(key):
            self.client.upload_file(
                str(path), self.bucket, self.prefix + key, Config=self._transfer
            )
        logger.debug("uploaded: %s to %s/%s", path, self.describe(), key)

    def download_file(self, key: str, path: Path) -> None:
        """Stream one GET of the object into `path` (no HeadObject first, unlike boto3's)."""
        validate_key(key)
        with self._errors(key), atomic_write(Path(path)) as target:
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
            with contextlib.closing(body):
                shutil.copyfileobj(body, target, _COPY_CHUNK)
        logger.debug("downloaded: %s/%s to %s", self.describe(), key, path)

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        logger.debug("deleted: %s from %s", key, self.describe())

    def delete_prefix(self, prefix: str) -> int:
        """Delete everything under `prefix` in batches, including keys `list` skips."""
        folder = validate_prefix(prefix)
        with self._errors(None):
            names = [name for name, _ in self._iter_objects(self.prefix + folder)]
            for start in range(0, len(names), _DELETE_BATCH):
                self._delete_batch(names[start : start + _DELETE_BATCH])
        logger.info("deleted: %d objects under %s/%s", len(names), self.describe(), folder)
        return len(names)

    def _iter_objects(self, full_prefix: str) -> Iterator[tuple[str, int]]:
        """Yield (bucket key, size) of every object whose bucket key starts with `full_prefix`."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            for item in page.get("Contents", []):
                yield item["Key"], item["Size"]

    def _info(self, name: str, size: int) -> ObjectInfo | None:
        """Return the info of a listed bucket key, or None if it makes no valid key."""
        key = name[len(self.prefix) :]
        try:
            return ObjectInfo(validate_key(key), size)
        except InvalidKey:
            # Folder markers ('a/') made by consoles land here too.
            logger.debug("skipping s3://%s/%s: not a valid key", self.bucket, name)
            return None

    def _delete_batch(self, names: builtins.list[str]) -> None:
        """Delete up to 1000 bucket keys in one request.

        Raises:
            StorageError: naming the keys S3 refused to delete.
        """
        response = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": name} for name in names], "Quiet": True}
        )
        failed = [error["Key"] for error in response.get("Errors", [])]
        if failed:
            raise StorageError(f"could not delete from {self.describe()}: {', '.join(failed)}")

    @contextlib.contextmanager
    def _errors(self, key: str | None) -> Iterator[None]:
        """Translate boto3 errors into the storage errors; `key` None means no one object.

        Raises:
            ObjectNotFound, StorageUnavailable, StorageError.
        """
        errors = self._botocore_errors
        try:
            yield
        except errors.ClientError as exc:
            raise self._client_error(exc, key) from exc
        except (errors.ConnectionError, errors.HTTPClientError) as exc:
            raise StorageUnavailable(f"cannot reach S3 for {self.describe()}: {exc}") from exc
        except (
            errors.NoCredentialsError,
            errors.PartialCredentialsError,
            errors.CredentialRetrievalError,
        ) as exc:
            raise StorageUnavailable(
                f"no usable S3 credentials for {self.describe()}: {exc}"
            ) from exc
        except errors.BotoCoreError as exc:
            raise StorageError(f"S3 failed for {self.describe()}: {exc}") from exc
        except self._upload_failed as exc:
            # boto3's upload_file wraps the ClientError it met (as the context, not the cause).
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, errors.ClientError):
                raise self._client_error(cause, key) from exc
            raise StorageError(f"upload to {self.describe()} failed: {exc}") from exc

    def _client_error(self, exc: Any, key: str | None) -> StorageError:
        """Return the storage error for a botocore ClientError."""
        code = _error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _NOT_FOUND_CODES and key is not None:
            return ObjectNotFound(key, self.describe())
        if code in _NOT_FOUND_CODES or code == "NoSuchBucket":
            return StorageUnavailable(f"bucket {self.bucket!r} does not exist ({self.describe()})")
        if code in _DENIED_CODES or status == 403:
            return StorageUnavailable(f"access to {self.describe()} denied: {exc}")
        if status is not None and status >= 500:
            return StorageUnavailable(f"S3 failed for {self.describe()}: {exc}")
        return StorageError(f"S3 refused a request for {self.describe()}: {exc}")


def _error_code(exc: Any) -> str:
    """Return the error code of a botocore ClientError (e.g. 'NoSuchKey', '404')."""
    return str(exc.response.get("Error", {}).get("Code", ""))
