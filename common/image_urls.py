"""Where images asked for as `url` go, and the URL the client gets back.

S3ImageUrls     STRATUS_IMAGE_BUCKET set, on every platform: each PNG is uploaded, and the
                answer is a presigned GET URL that works for STRATUS_IMAGE_URL_TTL seconds
ServedImages    the HTTP gateway without a bucket: each PNG is kept in STRATUS_IMAGE_DIR and
                served at /generated-images/<id>.png (no API key: the id is 128 random bits)
                until it is STRATUS_IMAGE_URL_TTL seconds old, then removed
NoImageUrls     RunPod and Lambda without a bucket: no lasting place to serve a file from, so
                `url` is a 400 that says what to do (b64_json works everywhere)
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from common.errors import EngineUnavailable, InvalidRequest

log = logging.getLogger("stratus.images")

ROUTE = "/generated-images"
NAME = re.compile(r"^[A-Za-z0-9_-]{22}\.png$")  # what _new_name makes, and nothing else
SWEEP_INTERVAL = 60.0


class ImageUrls(Protocol):
    def check(self) -> None:
        """Raises a clear error, before any image is drawn, if URLs cannot be given here."""
        ...

    def publish(self, pngs: Sequence[bytes], base_url: str | None) -> list[str]:
        """A URL for each PNG; `base_url` is the request's own (scheme://host[:port])."""
        ...


def _new_name() -> str:
    return secrets.token_urlsafe(16) + ".png"  # 22 characters of base64url


class NoImageUrls:
    def __init__(self, platform: str) -> None:
        self.platform = platform

    def check(self) -> None:
        raise InvalidRequest(
            f"response_format 'url' needs an image bucket on {self.platform}: ask for "
            "'b64_json', or set STRATUS_IMAGE_BUCKET on the server.",
            param="response_format",
            code="url_not_available",
        )

    def publish(self, pngs: Sequence[bytes], base_url: str | None) -> list[str]:
        self.check()
        return []


class ServedImages:
    def __init__(
        self,
        directory: Path,
        ttl: float,
        public_url: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.ttl = ttl
        self.public_url = public_url.rstrip("/")
        self._clock = clock
        self._next_sweep = 0.0

    def check(self) -> None:
        return None

    def publish(self, pngs: Sequence[bytes], base_url: str | None) -> list[str]:
        base = self.public_url or (base_url or "").rstrip("/")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.sweep()
            return [f"{base}{ROUTE}/{self._store(png)}" for png in pngs]
        except OSError as exc:  # a full or read-only disk: the server's trouble, said clearly
            log.error("storing images in %s failed: %s", self.directory, exc)
            raise ImageStorageUnavailable() from None

    def _store(self, png: bytes) -> str:
        name = _new_name()
        partial = self.directory / f".{name}.{os.getpid()}.partial"
        try:
            partial.write_bytes(png)
            os.rename(partial, self.directory / name)  # whole, or not there at all
        finally:
            partial.unlink(missing_ok=True)
        return name

    def path(self, name: str) -> Path | None:
        """The file to serve for /generated-images/<name>, if it is there and not expired."""
        if not NAME.match(name):
            return None
        path = self.directory / name
        try:
            age = self._clock() - path.stat().st_mtime
        except OSError:
            return None
        if age >= self.ttl:
            path.unlink(missing_ok=True)
            return None
        return path

    def sweep(self, force: bool = False) -> int:
        """Removes expired images (and partial files a crash left); at most once a minute."""
        now = self._clock()
        if not force and now < self._next_sweep:
            return 0
        self._next_sweep = now + SWEEP_INTERVAL
        removed = 0
        for path in self.directory.iterdir():
            try:
                expired = now - path.stat().st_mtime >= self.ttl
            except OSError:
                continue
            if expired and (NAME.match(path.name) or path.name.endswith(".partial")):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


class ImageStorageUnavailable(EngineUnavailable):
    def __init__(self) -> None:
        super().__init__(
            "The generated images could not be stored; please retry shortly, or ask for "
            "response_format 'b64_json'.",
            code="image_storage_unavailable",
            headers={"Retry-After": "5"},
        )


class S3ImageUrls:
    """Uploads to s3://bucket/prefix<id>.png. The objects outlive their URLs: give the bucket a
    lifecycle rule that expires the prefix."""

    def __init__(self, client: Callable[[], Any], bucket: str, prefix: str, ttl: int) -> None:
        self._client = client  # a boto3 S3 client, made on first use
        self.bucket = bucket
        self.prefix = prefix
        self.ttl = ttl

    @classmethod
    def from_setting(cls, client: Callable[[], Any], setting: str, ttl: int) -> S3ImageUrls:
        """From STRATUS_IMAGE_BUCKET: BUCKET, BUCKET/PREFIX or s3://BUCKET/PREFIX."""
        bucket, _, prefix = setting.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        return cls(client, bucket, f"{prefix}/" if prefix else "generated-images/", ttl)

    def check(self) -> None:
        return None

    def publish(self, pngs: Sequence[bytes], base_url: str | None) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._client()
        urls = []
        try:
            for png in pngs:
                key = self.prefix + _new_name()
                client.put_object(Bucket=self.bucket, Key=key, Body=png, ContentType="image/png")
                urls.append(
                    client.generate_presigned_url(
                        "get_object",
                        Params={"Bucket": self.bucket, "Key": key},
                        ExpiresIn=self.ttl,
                    )
                )
        except (BotoCoreError, ClientError) as exc:
            log.error("storing images in s3://%s/%s failed: %s", self.bucket, self.prefix, exc)
            raise ImageStorageUnavailable() from None
        return urls
