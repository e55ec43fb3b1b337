"""Stored responses (the Responses API's `store: true` and `previous_response_id`).

They outlive the request that made them, so they never live in process memory (a serverless
worker forgets it). STRATUS_RESPONSES_STORE chooses the backend:

SQLiteResponseStore   a file, by default in the cache directory (on RunPod the network
                      volume): WAL mode and a busy timeout let the processes of one host
                      share it (WAL needs them on one host: a fleet across hosts uses S3)
S3ResponseStore       s3://BUCKET[/PREFIX]: one object per response, shared by a fleet. Reads
                      skip and remove expired ones; give the bucket a lifecycle rule that
                      expires the prefix after STRATUS_RESPONSES_TTL too

An id that does not exist, has expired or belongs to another API key is the same 404, so a
client never learns that someone else's response exists. A backend failure is a 503 whose
message names no bucket, key or file (the log at stratus.responses has them).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from common.errors import EngineUnavailable, InvalidRequest, NotFound

log = logging.getLogger("stratus.responses")

RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # fullmatch: `$` would let "id\n" through
BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
PURGE_BATCH = 100  # expired rows a put removes, at most: its cost stays bounded
RETRY_AFTER_SECONDS = 5
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS responses "
    "(id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL, document TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires)",
)
PURGE = (
    "DELETE FROM responses WHERE rowid IN (SELECT rowid FROM responses WHERE expires <= ? LIMIT ?)"
)
INSERT = "INSERT OR REPLACE INTO responses (id, owner, expires, document) VALUES (?, ?, ?, ?)"
SELECT = "SELECT document FROM responses WHERE id = ? AND owner = ? AND expires > ?"
DELETE = "DELETE FROM responses WHERE id = ? AND owner = ? AND expires > ?"


class ResponseStore(Protocol):
    max_bytes: int

    def put(self, response_id: str, owner: str, document: dict[str, Any]) -> None:
        """Keeps `document` for `owner` for the store's TTL; raises if it was not written."""
        ...

    def get(self, response_id: str, owner: str) -> dict[str, Any]:
        """The document, or NotFound if absent, expired or another owner's."""
        ...

    def delete(self, response_id: str, owner: str) -> None:
        """Removes it, or raises NotFound as get does."""
        ...


class ResponseStoreUnavailable(EngineUnavailable):
    def __init__(self) -> None:
        super().__init__(
            "Stored responses cannot be reached right now; please retry shortly.",
            code="response_store_unavailable",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


def response_not_found(response_id: str) -> NotFound:
    message = f"No response found with id '{response_id}'."
    return NotFound(message, param="response_id", code="response_not_found")


def _unavailable(action: str, where: str, exc: BaseException) -> ResponseStoreUnavailable:
    """Logs what failed where (the operator's business); the client's error names neither."""
    log.warning("responses: %s %s failed: %s: %s", action, where, type(exc).__name__, exc)
    return ResponseStoreUnavailable()


def _check_id(response_id: str) -> None:
    if not isinstance(response_id, str) or not RESPONSE_ID.fullmatch(response_id):
        raise response_not_found(str(response_id))


def serialise(
    document: dict[str, Any],
    max_bytes: int,
    param: str = "store",
    advice: str = "send `store: false`, or start a new conversation",
) -> str:
    """The document as stored, or a 400 naming `param` when it is over `max_bytes`."""
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"): escaped, it is ASCII
        text = json.dumps(document, separators=(",", ":"))
        size = len(text)
    if size > max_bytes:
        raise InvalidRequest(
            f"The conversation is too large to store ({size} bytes; the limit is {max_bytes}): "
            f"{advice}.",
            param=param,
            code="response_too_large",
        )
    return text


def _document(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"a stored document is a {type(value).__name__}, not an object")
    return value


class SQLiteResponseStore:
    """One table in one file; one connection per process, behind a lock."""

    def __init__(
        self,
        path: Path,
        ttl: float,
        max_bytes: int,
        *,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path, self.ttl, self.max_bytes = Path(path), ttl, max_bytes
        self.busy_timeout, self._clock = busy_timeout, clock
        self._lock = threading.Lock()
        self._db: Any = None
        self._pid = 0  # the process that opened _db

    def put(self, response_id: str, owner: str, document: dict[str, Any]) -> None:
        _check_id(response_id)
        text = serialise(document, self.max_bytes)
        now = self._clock()
        with self._session("put", response_id) as db:
            db.execute("BEGIN IMMEDIATE")
            with db:  # commits, or rolls back on an error: both rows or neither
                db.execute(PURGE, (now, PURGE_BATCH))
                db.execute(INSERT, (response_id, owner, now + self.ttl, text))

    def get(self, response_id: str, owner: str) -> dict[str, Any]:
        _check_id(response_id)
        with self._session("get", response_id) as db:
            row = db.execute(SELECT, (response_id, owner, self._clock())).fetchone()
            if row is None:
                raise response_not_found(response_id)
            return _document(json.loads(row[0]))

    def delete(self, response_id: str, owner: str) -> None:
        _check_id(response_id)
        with self._session("delete", response_id) as db:
            if db.execute(DELETE, (response_id, owner, self._clock())).rowcount == 0:
                raise response_not_found(response_id)

    @contextlib.contextmanager
    def _session(self, action: str, response_id: str) -> Iterator[Any]:
        import sqlite3

        with self._lock:
            try:
                yield self._connect()
            except (sqlite3.Error, OSError, ValueError) as exc:
                if self._db is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.close()
                self._db = None  # the next call opens it afresh
                raise _unavailable(action, f"{response_id} in {self.path}", exc) from None

    def _connect(self) -> Any:
        import sqlite3

        if self._db is not None and self._pid == os.getpid():
            return self._db
        self._db = None  # a connection never crosses a fork: the child opens its own
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # a committed put survives a power cut
            for statement in SCHEMA:
                db.execute(statement)
        except BaseException:
            db.close()
            raise
        self._db, self._pid = db, os.getpid()
        return db


class S3ResponseStore:
    """s3://bucket/prefix<id>.json holding {"owner", "expires", "document"}."""

    def __init__(
        self,
        client: Callable[[], Any],
        bucket: str,
        prefix: str,
        ttl: float,
        max_bytes: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client  # a boto3 S3 client, made on first use
        self.bucket, self.prefix, self.ttl, self.max_bytes = bucket, prefix, ttl, max_bytes
        self._clock = clock

    def put(self, response_id: str, owner: str, document: dict[str, Any]) -> None:
        _check_id(response_id)
        text = serialise(document, self.max_bytes)
        expires = json.dumps(self._clock() + self.ttl)
        body = f'{{"owner":{json.dumps(owner)},"expires":{expires},"document":{text}}}'
        key = self._key(response_id)
        with self._errors("put", response_id):
            self._client().put_object(
                Bucket=self.bucket, Key=key, Body=body.encode(), ContentType="application/json"
            )

    def get(self, response_id: str, owner: str) -> dict[str, Any]:
        return self._read(response_id, owner)

    def delete(self, response_id: str, owner: str) -> None:
        self._read(response_id, owner)  # the owner's, and not expired: else NotFound
        with self._errors("delete", response_id):
            self._client().delete_object(Bucket=self.bucket, Key=self._key(response_id))

    def _key(self, response_id: str) -> str:
        return f"{self.prefix}{response_id}.json"

    def _read(self, response_id: str, owner: str) -> dict[str, Any]:
        _check_id(response_id)
        with self._errors("get", response_id):
            answer = self._client().get_object(Bucket=self.bucket, Key=self._key(response_id))
            stored = json.loads(answer["Body"].read())
            stored_owner, expires = stored["owner"], float(stored["expires"])
            document = _document(stored["document"])
            if not isinstance(stored_owner, str):
                raise ValueError("a stored owner is not a string")
        if expires <= self._clock():
            with contextlib.suppress(ResponseStoreUnavailable, NotFound):
                with self._errors("delete expired", response_id):
                    self._client().delete_object(Bucket=self.bucket, Key=self._key(response_id))
            raise response_not_found(response_id)
        if not hmac.compare_digest(stored_owner.encode(), owner.encode()):
            raise response_not_found(response_id)
        return document

    @contextlib.contextmanager
    def _errors(self, action: str, response_id: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound") or (
                status == 404 and code != "NoSuchBucket"
            ):
                raise response_not_found(response_id) from None
            raise _unavailable(action, self._url(response_id), exc) from None
        except (BotoCoreError, OSError, ValueError, KeyError, TypeError) as exc:
            # unreachable, timed out, credentials missing; or a body that is not a response
            raise _unavailable(action, self._url(response_id), exc) from None

    def _url(self, response_id: str) -> str:
        return f"s3://{self.bucket}/{self._key(response_id)}"


def response_store_from_setting(
    setting: str, default_path: Path, ttl: float, max_bytes: int, s3_client: Callable[[], Any]
) -> ResponseStore:
    """STRATUS_RESPONSES_STORE: "" (SQLite at default_path), a path, sqlite:///abs/path, or
    s3://BUCKET[/PREFIX]. Anything else is a ValueError that says what is accepted."""
    value = setting.strip()
    if not value:
        return SQLiteResponseStore(default_path, ttl, max_bytes)
    scheme, separator, rest = value.partition("://")
    if not separator:
        return SQLiteResponseStore(Path(value).expanduser(), ttl, max_bytes)
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        if BUCKET.fullmatch(bucket):
            prefix = f"{prefix.strip('/')}/".lstrip("/")  # "", or ending with one "/"
            return S3ResponseStore(s3_client, bucket, prefix, ttl, max_bytes)
    if scheme == "sqlite" and rest.startswith("/") and rest.strip("/"):
        return SQLiteResponseStore(Path(rest), ttl, max_bytes)
    raise ValueError(
        f"STRATUS_RESPONSES_STORE={setting!r} is not a place to keep responses: leave it empty "
        "(a SQLite file in the cache directory), or give a file path, sqlite:///absolute/path "
        "or s3://BUCKET[/PREFIX]."
    )
