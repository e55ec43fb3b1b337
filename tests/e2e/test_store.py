"""The model store against real S3 (moto on loopback, through the fault proxy).

The engine here is a stand-in that reads the fetched file: what is under test is fetching,
caching and loading, not generation (tests/e2e/test_s3_models.py does that end to end).
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from adapters.runtime import build_fetcher
from common.errors import NotFound
from common.fetch import IntegrityError
from common.registry import ModelConfig, RegisteredModel, Registry
from common.s3 import S3Unreachable
from common.settings import Settings
from common.store import ModelStore
from tests.conftest import BUCKET

SMOLLM2_SIZE = 98362432
CHUNK = 8 * 1024 * 1024


@pytest.fixture
def aws(s3, monkeypatch):
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    s3.proxy.clear()
    yield s3
    s3.proxy.down = False
    s3.proxy.reset_after = None


def entry(name: str, source: str, **fields) -> ModelConfig:
    return ModelConfig(name=name, backend="llama-cpp", source=source, **fields)


class CountingLoader:
    """Loads a 'model' by reading its file; counts loads."""

    def __init__(self) -> None:
        self.loads = 0
        self._lock = threading.Lock()

    def __call__(self, config: ModelConfig, path: Path) -> bytes:
        with self._lock:
            self.loads += 1
        return (
            path.read_bytes()[:64]
            if path.is_file()
            else b"dir:" + str(sorted(p.name for p in path.iterdir())).encode()
        )


def make_store(
    tmp_path: Path, *configs: ModelConfig, ttl: float = -1, **settings
) -> tuple[ModelStore, CountingLoader]:
    registry = Registry([RegisteredModel(c, user_configured=True) for c in configs])
    fetcher = build_fetcher(Settings(cache_dir=tmp_path / "cache", **settings))
    loader = CountingLoader()
    return ModelStore(registry, loader, fetcher.local_path, ttl=ttl), loader


def put(s3, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=body)


def test_parallel_cold_starts_download_once_and_load_once(aws, tmp_path):
    store, loader = make_store(tmp_path, entry("m", f"s3://{BUCKET}/smollm2.gguf"))
    results: list[bytes] = []

    def first_request() -> None:
        with store.use("m") as model:
            results.append(model)

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 8 and len(set(results)) == 1 and results[0].startswith(b"GGUF")
    assert loader.loads == 1
    assert aws.proxy.count("HEAD", "/smollm2.gguf") == 1
    assert aws.proxy.count("GET", "/smollm2.gguf") == math.ceil(SMOLLM2_SIZE / CHUNK), " ".join(
        sorted(r[2] for r in aws.proxy.requests)
    )


def test_processes_sharing_a_cache_download_once(aws, tmp_path, server):
    env = {**os.environ, **aws.env, "STRATUS_CACHE_DIR": str(tmp_path / "shared")}
    command = [
        sys.executable,
        "-m",
        "adapters.cli",
        "prefetch",
        "s3-dir-chat",
        "--models",
        str(server.registry),
    ]
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    assert aws.proxy.count("GET", "/dir-model/model.gguf") == math.ceil(SMOLLM2_SIZE / CHUNK)
    assert sum(b"fetched to" in out for out, _ in outputs) == 1  # the others found it cached
    # stderr is a pipe here, not a terminal: no progress bar (tests/unit/test_progress.py)
    assert b"B/s" not in b"".join(err for _, err in outputs)


def test_an_updated_object_is_fetched_again_a_stale_one_never_served(aws, tmp_path):
    put(aws, "updated.bin", b"version one")
    config = entry("u", f"s3://{BUCKET}/updated.bin")
    store, _ = make_store(tmp_path, config)
    with store.use("u") as model:
        assert model == b"version one"
    put(aws, "updated.bin", b"version two")
    fresh_process, _ = make_store(tmp_path, config)  # same disk cache, cold memory
    with fresh_process.use("u") as model:
        assert model == b"version two"


def test_with_s3_down_a_cached_model_still_serves(aws, tmp_path):
    put(aws, "steady.bin", b"steady")
    put(aws, "never-fetched.bin", b"x")
    configs = (
        entry("s", f"s3://{BUCKET}/steady.bin"),
        entry("n", f"s3://{BUCKET}/never-fetched.bin"),
    )
    store, _ = make_store(tmp_path, *configs)
    with store.use("s"):
        pass
    aws.proxy.down = True
    later, _ = make_store(tmp_path, *configs)
    with later.use("s") as model:
        assert model == b"steady"
    with pytest.raises(S3Unreachable) as caught:
        with later.use("n"):
            pass
    assert caught.value.status == 503 and caught.value.headers["Retry-After"]


def test_a_missing_object_names_the_model_not_the_bucket(aws, tmp_path):
    store, _ = make_store(tmp_path, entry("ghost", f"s3://{BUCKET}/nothing-here.gguf"))
    with pytest.raises(NotFound) as caught:
        with store.use("ghost"):
            pass
    assert "ghost" in caught.value.message and BUCKET not in caught.value.message


def test_sha256_is_checked_and_a_mismatch_is_never_cached(aws, tmp_path):
    body = b"weights"
    put(aws, "checked.bin", body)
    good = hashlib.sha256(body).hexdigest()
    store, _ = make_store(
        tmp_path,
        entry("good", f"s3://{BUCKET}/checked.bin", sha256=good),
        entry("bad", f"s3://{BUCKET}/checked.bin", sha256="0" * 64),
    )
    with pytest.raises(IntegrityError):
        with store.use("bad"):
            pass
    assert list((tmp_path / "cache" / "entries").iterdir()) == []
    assert list((tmp_path / "cache" / "partial").iterdir()) == []
    with store.use("good") as model:
        assert model == body


def test_disk_cache_evicts_the_least_recently_used(aws, tmp_path):
    for name in "abc":
        put(aws, f"lru-{name}.bin", name.encode() * 400_000)  # 0.4 MB each
    configs = [entry(n, f"s3://{BUCKET}/lru-{n}.bin") for n in "abc"]
    # A 1 MB cap, and models unloaded when idle so that each use goes to the disk cache.
    store, _ = make_store(tmp_path, *configs, ttl=0, cache_max_gb=0.001)
    cache = tmp_path / "cache" / "entries"
    for name in ("a", "b", "a", "c"):  # a is used again, so b is the least recently used
        with store.use(name):
            pass
    sources = {json_source(p) for p in cache.iterdir()}
    assert sources == {f"s3://{BUCKET}/lru-a.bin", f"s3://{BUCKET}/lru-c.bin"}


def json_source(entry_dir: Path) -> str:
    import json

    return json.loads((entry_dir / "meta.json").read_text())["source"]


def test_directory_models_keep_their_layout(aws, tmp_path):
    store, _ = make_store(tmp_path, entry("d", f"s3://{BUCKET}/dir-model/"))
    with store.use("d") as model:
        assert model == b"dir:['README.md', 'model.gguf']"
