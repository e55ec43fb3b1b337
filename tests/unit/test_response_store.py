"""Stored responses: the same behaviour from a SQLite file and from S3 (moto's real server),
on an injected clock; then each backend's failures, and the setting that chooses one."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.runtime import build_response_store
from common.errors import InvalidRequest, NotFound
from common.response_store import (
    ResponseStore,
    ResponseStoreUnavailable,
    S3ResponseStore,
    SQLiteResponseStore,
    response_store_from_setting,
)
from common.settings import Settings
from tests.processes import free_port
from tests.s3_server import MotoServer

BUCKET = "stratus-responses"
DOCUMENT = {
    "response": {"id": "resp_1", "output": [{"type": "message", "content": "héllo ✓"}]},
    "input": [{"role": "user", "content": "hi"}],
    "earlier": [],
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def boto_client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=1,
            read_timeout=5,
        ),
    )


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    moto = MotoServer()
    try:
        client = boto_client(moto.url)
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        moto.stop()


@dataclass
class Backend:
    make: Callable[..., ResponseStore]  # make(ttl=..., max_bytes=...)
    clock: Clock
    touched: Callable[[], bool]  # has any store reached the backend (file or S3)?
    count: Callable[[], int]  # responses kept, expired ones included


@pytest.fixture(params=["sqlite", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    clock = Clock()
    if request.param == "sqlite":
        path = tmp_path / "volume" / "responses.sqlite3"

        def make(ttl: float = 3600, max_bytes: int = 1 << 20) -> ResponseStore:
            return SQLiteResponseStore(path, ttl, max_bytes, clock=clock)

        def count() -> int:
            with sqlite3.connect(path) as db:
                return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

        return Backend(make, clock, lambda: path.parent.exists(), count)

    client = request.getfixturevalue("s3")
    prefix = f"{uuid.uuid4().hex}/"  # each test its own prefix in the one bucket
    calls: list[int] = []

    def factory() -> Any:
        calls.append(1)
        return client

    def make_s3(ttl: float = 3600, max_bytes: int = 1 << 20) -> ResponseStore:
        return S3ResponseStore(factory, BUCKET, prefix, ttl, max_bytes, clock=clock)

    def count_s3() -> int:
        return client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("KeyCount", 0)

    return Backend(make_s3, clock, lambda: bool(calls), count_s3)


def not_found(call: Callable[[], Any]) -> str:
    with pytest.raises(NotFound) as raised:
        call()
    error = raised.value
    assert (error.status, error.code, error.param) == (404, "response_not_found", "response_id")
    return error.message


def test_round_trip(backend: Backend):
    store = backend.make()
    store.put("resp_1", "alice", DOCUMENT)
    assert store.get("resp_1", "alice") == DOCUMENT
    store.put("resp_1", "alice", {"replaced": True})  # a put of the same id replaces it
    assert store.get("resp_1", "alice") == {"replaced": True}
    # JSON allows a lone surrogate ("\ud800"), which UTF-8 does not: it still round-trips
    odd = {"text": "a\ud800b", "emoji": "\U0001f600"}
    store.put("resp_odd", "", odd)
    assert store.get("resp_odd", "") == odd
    assert backend.count() == 2


def test_another_owner_gets_the_same_404_as_for_a_missing_id(backend: Backend):
    store = backend.make()
    store.put("resp_1", "alice", DOCUMENT)
    missing = not_found(lambda: store.get("resp_2", "alice"))
    assert missing == "No response found with id 'resp_2'."
    assert not_found(lambda: store.get("resp_1", "bob")) == missing.replace("resp_2", "resp_1")
    assert not_found(lambda: store.get("resp_1", "")) == missing.replace("resp_2", "resp_1")
    assert not_found(lambda: store.delete("resp_1", "bob")) == missing.replace("resp_2", "resp_1")
    assert store.get("resp_1", "alice") == DOCUMENT  # still there for its owner


def test_delete_then_get_is_not_found(backend: Backend):
    store = backend.make()
    store.put("resp_1", "alice", DOCUMENT)
    store.delete("resp_1", "alice")
    not_found(lambda: store.get("resp_1", "alice"))
    not_found(lambda: store.delete("resp_1", "alice"))
    assert backend.count() == 0


def test_expired_responses_are_absent_and_purged(backend: Backend):
    store = backend.make(ttl=60)
    store.put("resp_old", "alice", DOCUMENT)
    backend.clock.now += 59.9
    assert store.get("resp_old", "alice") == DOCUMENT
    backend.clock.now += 0.1
    not_found(lambda: store.get("resp_old", "alice"))
    not_found(lambda: store.delete("resp_old", "alice"))
    # Purged along the way: S3 on reading it, SQLite on the next put.
    store.put("resp_new", "alice", DOCUMENT)
    assert backend.count() == 1
    assert store.get("resp_new", "alice") == DOCUMENT


def test_a_response_over_the_size_cap_is_a_400_and_is_not_written(backend: Backend):
    store = backend.make(max_bytes=100)
    exact = {"t": "x" * 92}  # {"t":"...."} is 100 bytes
    store.put("resp_exact", "alice", exact)
    with pytest.raises(InvalidRequest) as raised:
        store.put("resp_big", "alice", {"t": "é" * 47})  # 55 characters, 102 bytes
    error = raised.value
    assert (error.status, error.code, error.param) == (400, "response_too_large", "store")
    assert "too large to store" in error.message and "store: false" in error.message
    not_found(lambda: store.get("resp_big", "alice"))
    assert backend.count() == 1


@pytest.mark.parametrize(
    "response_id", ["", "a" * 129, "../etc/passwd", "a b", "resp\n", "x/y", "résumé", "a.json"]
)
def test_invalid_ids_are_not_found_without_reaching_the_backend(backend: Backend, response_id):
    store = backend.make()
    message = not_found(lambda: store.get(response_id, "alice"))
    assert not_found(lambda: store.delete(response_id, "alice")) == message
    assert not backend.touched()


def test_nothing_is_opened_before_first_use(backend: Backend):
    backend.make()
    assert not backend.touched()


def test_two_sqlite_stores_on_one_file_share_it(tmp_path: Path):
    path = tmp_path / "shared.sqlite3"
    first = SQLiteResponseStore(path, 3600, 1 << 20)
    second = SQLiteResponseStore(path, 3600, 1 << 20)
    first.put("resp_1", "alice", DOCUMENT)
    assert second.get("resp_1", "alice") == DOCUMENT
    second.delete("resp_1", "alice")
    not_found(lambda: first.get("resp_1", "alice"))

    errors: list[BaseException] = []

    def work(store: SQLiteResponseStore, n: int) -> None:
        try:
            for i in range(20):
                store.put(f"resp_{n}_{i}", "alice", {"n": n, "i": i})
                assert store.get(f"resp_{n}_{i}", "alice") == {"n": n, "i": i}
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=((first, second)[n % 2], n)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 120
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_put_purges_a_bounded_number_of_expired_rows(tmp_path: Path, monkeypatch):
    import common.response_store as module

    monkeypatch.setattr(module, "PURGE_BATCH", 3)
    clock = Clock()
    store = SQLiteResponseStore(tmp_path / "r.sqlite3", 10, 1 << 20, clock=clock)
    for i in range(5):
        store.put(f"resp_{i}", "alice", {"i": i})
    clock.now += 10
    store.put("resp_new", "alice", {})
    with sqlite3.connect(tmp_path / "r.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 3  # 5 - 3 + 1


def assert_unavailable(call: Callable[[], Any], *secrets: str) -> None:
    with pytest.raises(ResponseStoreUnavailable) as raised:
        call()
    error = raised.value
    assert (error.status, error.code) == (503, "response_store_unavailable")
    assert error.headers == {"Retry-After": "5"}
    for secret in secrets:
        assert secret not in error.message


def test_s3_unreachable_is_a_503_that_names_no_bucket(caplog):
    client = boto_client(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    store = S3ResponseStore(lambda: client, "secret-bucket", "private/", 3600, 1 << 20)
    with caplog.at_level(logging.WARNING, logger="stratus.responses"):
        assert_unavailable(lambda: store.put("resp_1", "alice", DOCUMENT), "secret", "private")
        assert_unavailable(lambda: store.get("resp_1", "alice"), "secret", "private")
        assert_unavailable(lambda: store.delete("resp_1", "alice"), "secret", "private")
    assert "s3://secret-bucket/private/resp_1.json" in caplog.text  # the operator's log has it


def test_s3_missing_bucket_or_a_corrupt_object_is_a_503(s3):
    store = S3ResponseStore(lambda: s3, "no-such-bucket", "", 3600, 1 << 20)
    assert_unavailable(lambda: store.get("resp_1", "alice"), "no-such-bucket")
    assert_unavailable(lambda: store.put("resp_1", "alice", DOCUMENT), "no-such-bucket")
    prefix = f"{uuid.uuid4().hex}/"
    store = S3ResponseStore(lambda: s3, BUCKET, prefix, 3600, 1 << 20)
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}resp_bad.json", Body=b"{not json")
    assert_unavailable(lambda: store.get("resp_bad", "alice"))
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}resp_odd.json", Body=b'{"document": []}')
    assert_unavailable(lambda: store.get("resp_odd", "alice"))


def test_s3_object_layout(s3):
    clock = Clock()
    store = S3ResponseStore(lambda: s3, BUCKET, "layout/", 60, 1 << 20, clock=clock)
    store.put("resp_1", "alice", DOCUMENT)
    body = s3.get_object(Bucket=BUCKET, Key="layout/resp_1.json")["Body"].read()
    assert json.loads(body) == {"owner": "alice", "expires": 1060.0, "document": DOCUMENT}
    assert "héllo ✓".encode() in body  # not \u-escaped


def test_sqlite_file_that_is_not_a_database_is_a_503_until_it_is_mended(tmp_path: Path, caplog):
    path = tmp_path / "secret-dir" / "responses.sqlite3"
    path.parent.mkdir()
    path.write_bytes(b"this is not a database, just some garbage bytes " * 50)
    store = SQLiteResponseStore(path, 3600, 1 << 20)
    with caplog.at_level(logging.WARNING, logger="stratus.responses"):
        assert_unavailable(lambda: store.put("resp_1", "alice", DOCUMENT), "secret", str(path))
        assert_unavailable(lambda: store.get("resp_1", "alice"), "secret", str(path))
    assert str(path) in caplog.text
    path.unlink()
    store.put("resp_1", "alice", DOCUMENT)  # a failed connection is not kept
    assert store.get("resp_1", "alice") == DOCUMENT


def test_sqlite_corrupt_row_or_a_database_that_stays_locked_is_a_503(tmp_path: Path):
    path = tmp_path / "r.sqlite3"
    store = SQLiteResponseStore(path, 3600, 1 << 20, busy_timeout=0.1)
    store.put("resp_1", "alice", DOCUMENT)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE responses SET document = '{truncated' WHERE id = 'resp_1'")
    assert_unavailable(lambda: store.get("resp_1", "alice"))

    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        assert_unavailable(lambda: store.put("resp_2", "alice", DOCUMENT))
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    store.put("resp_2", "alice", DOCUMENT)  # the lost write was reported; this one is kept
    assert store.get("resp_2", "alice") == DOCUMENT


def test_setting_chooses_the_backend(tmp_path: Path):
    made: list[int] = []

    def client() -> Any:
        made.append(1)

    def parse(setting: str) -> ResponseStore:
        return response_store_from_setting(setting, tmp_path / "default.db", 60, 1000, client)

    for setting in ("", "  "):
        store = parse(setting)
        assert isinstance(store, SQLiteResponseStore) and store.path == tmp_path / "default.db"
        assert (store.ttl, store.max_bytes) == (60, 1000)
    assert parse("/data/r.db").path == Path("/data/r.db")
    assert parse("sqlite:///abs/path.db").path == Path("/abs/path.db")
    assert parse("~/r.db").path == Path.home() / "r.db"
    for setting, bucket, prefix in [
        ("s3://bucket", "bucket", ""),
        ("s3://bucket/", "bucket", ""),
        ("s3://bucket/responses", "bucket", "responses/"),
        ("s3://my.bucket/a/b/", "my.bucket", "a/b/"),
    ]:
        store = parse(setting)
        assert isinstance(store, S3ResponseStore)
        assert (store.bucket, store.prefix, store.ttl, store.max_bytes) == (
            bucket,
            prefix,
            60,
            1000,
        )
    for bad in ("s3://", "s3:///prefix", "gs://bucket", "http://host/x", "sqlite://rel.db"):
        with pytest.raises(ValueError, match="STRATUS_RESPONSES_STORE"):
            parse(bad)
    assert made == [] and not (tmp_path / "default.db").exists()  # nothing opened


def test_settings_build_the_store(tmp_path: Path, monkeypatch):
    store = build_response_store(Settings(cache_dir=tmp_path))
    assert isinstance(store, SQLiteResponseStore)
    assert store.path == tmp_path / "responses.sqlite3"
    assert (store.ttl, store.max_bytes) == (30 * 24 * 3600, 16 * 1024 * 1024)
    monkeypatch.setenv("STRATUS_RESPONSES_STORE", "s3://fleet/stored")
    monkeypatch.setenv("STRATUS_RESPONSES_TTL", "120")
    monkeypatch.setenv("STRATUS_RESPONSES_MAX_MB", "0.5")
    store = build_response_store(Settings(cache_dir=tmp_path))
    assert isinstance(store, S3ResponseStore)
    assert (store.bucket, store.prefix, store.ttl, store.max_bytes) == (
        "fleet",
        "stored/",
        120,
        512 * 1024,
    )
    monkeypatch.setenv("STRATUS_RESPONSES_TTL", "59")
    with pytest.raises(ValueError):
        Settings(cache_dir=tmp_path)


def test_import_has_no_side_effects():
    code = (
        "import sys, common.response_store; "
        "print(sorted(m for m in ('boto3', 'botocore', 'sqlite3') if m in sys.modules))"
    )
    root = Path(__file__).parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
