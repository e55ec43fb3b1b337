"""S3 (and S3-compatible stores) through boto3: describe objects, download them in parallel.

boto3 is imported on first use only. Credentials come from the standard chain; an endpoint
from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (MinIO, R2, moto) is honoured by boto3 itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import EngineUnavailable, StratusError
from common.sources import S3Source, not_available

log = logging.getLogger("stratus.s3")

RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class RemoteObject:
    key: str
    size: int
    etag: str
    version: str | None = None


@dataclass(frozen=True)
class S3Settings:
    max_concurrency: int = 10
    chunk_bytes: int = 8 * 1024 * 1024
    attempts: int = 3  # whole-transfer attempts; botocore retries each request too
    backoff_seconds: float = 0.5


class S3Unreachable(EngineUnavailable):
    """The store could not be reached (or the transfer kept breaking): worth a retry later."""

    def __init__(self, model_name: str) -> None:
        super().__init__(
            f"The storage holding model '{model_name}' cannot be reached right now; "
            "please retry shortly.",
            code="model_storage_unavailable",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


class S3AccessDenied(EngineUnavailable):
    """The store refused the server's credentials. The client learns the model and the missing
    permission; the bucket and key are in the server's log only."""

    def __init__(self, model_name: str, permission: str) -> None:
        super().__init__(
            f"The server may not read model '{model_name}': its storage credentials lack "
            f"{permission}. Ask the operator (the server log names the object).",
            code="model_access_denied",
        )


class S3:
    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    retries={"max_attempts": 4, "mode": "standard"},
                    max_pool_connections=max(10, self.settings.max_concurrency + 2),
                    connect_timeout=5,
                    read_timeout=30,
                    signature_version="s3v4",  # presigned image URLs too (SigV2 is retired)
                )
                self._client = boto3.session.Session().client("s3", config=config)
            return self._client

    def describe(self, model_name: str, source: S3Source) -> list[RemoteObject]:
        """The object, or every object under the prefix, with its size and ETag."""
        with _errors(model_name, source, "s3:ListBucket" if source.is_prefix else "s3:GetObject"):
            if not source.is_prefix:
                head = self.client.head_object(Bucket=source.bucket, Key=source.key)
                return [
                    RemoteObject(
                        source.key, head["ContentLength"], head["ETag"], head.get("VersionId")
                    )
                ]
            objects = []
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=source.bucket, Prefix=source.key
            )
            for page in pages:
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/"):  # "folder" placeholder objects
                        objects.append(RemoteObject(item["Key"], item["Size"], item["ETag"]))
            if not objects:
                raise not_available(model_name)
            return objects

    def download(
        self,
        model_name: str,
        source: S3Source,
        obj: RemoteObject,
        destination: Path,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Download one object, pinned to its ETag (every ranged GET carries If-Match)."""
        from boto3.s3.transfer import TransferConfig
        from s3transfer.manager import TransferManager
        from s3transfer.subscribers import BaseSubscriber

        class Known(BaseSubscriber):
            # Size and ETag are known from describe(): no second HEAD, and the transfer
            # manager pins every part to this ETag, so a changing object fails the transfer.
            def on_queued(self, future: Any, **kwargs: Any) -> None:
                future.meta.provide_transfer_size(obj.size)
                future.meta.provide_object_etag(obj.etag)

            def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
                if progress is not None:
                    progress(bytes_transferred)

        config = TransferConfig(
            max_concurrency=self.settings.max_concurrency,
            multipart_chunksize=self.settings.chunk_bytes,
            multipart_threshold=self.settings.chunk_bytes,
            num_download_attempts=2,  # per part; then the whole transfer is retried
        )
        extra = {"VersionId": obj.version} if obj.version else {}
        url = f"s3://{source.bucket}/{obj.key}"
        for attempt in range(1, self.settings.attempts + 1):
            try:
                with (
                    _errors(model_name, source, "s3:GetObject", url),
                    TransferManager(self.client, config) as manager,
                ):
                    future = manager.download(
                        source.bucket, obj.key, str(destination), extra, [Known()]
                    )
                    future.result()
                return
            except S3Unreachable:
                destination.unlink(missing_ok=True)
                if attempt == self.settings.attempts:
                    raise
                time.sleep(self.settings.backoff_seconds * 2 ** (attempt - 1))


class _errors:
    """Maps boto3's exceptions to the store's errors, naming the model, not the bucket: the
    client sees the model's name; the log has the bucket, the key and what S3 answered."""

    def __init__(self, model_name: str, source: S3Source, permission: str, url: str = "") -> None:
        self.model_name, self.permission = model_name, permission
        self.url = url or source.url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> bool:
        if error is None or isinstance(error, StratusError):
            return False
        mapped = self._map(error)
        if mapped is None:
            return False
        log.warning(
            "model %s: %s on %s failed: %s: %s",
            self.model_name,
            self.permission,
            self.url,
            type(error).__name__,
            error,
        )
        raise mapped from None

    def _map(self, error: BaseException) -> StratusError | None:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(error, ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound") or status == 404:
                return not_available(self.model_name)
            if code in ("403", "AccessDenied", "Forbidden") or status == 403:
                return S3AccessDenied(self.model_name, self.permission)
            if code in ("412", "PreconditionFailed"):  # the object changed mid-download
                return S3Unreachable(self.model_name)
            if status is not None and status >= 500:
                return S3Unreachable(self.model_name)
            return None
        if isinstance(error, BotoCoreError | ConnectionError | OSError):
            return S3Unreachable(self.model_name)
        # s3transfer wraps a broken stream in its own exception types
        if type(error).__module__.startswith("s3transfer"):
            return S3Unreachable(self.model_name)
        return None
