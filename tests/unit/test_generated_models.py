"""generated:// models (tiny-sd): written once into the disk cache however many first uses
arrive, nothing left behind by a failure, and the same bytes every time (real torch, diffusers)."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from common.disk_cache import DiskCache
from common.errors import NotFound
from common.fetch import ModelFetcher
from common.registry import ModelConfig
from common.s3 import S3, S3Settings
from layers import ModelGenerators


class CountingGenerators:
    def __init__(self) -> None:
        self.writes = 0

    def version(self, name: str) -> str | None:
        return "1" if name == "toy" else None

    def write(self, name: str, directory: Path) -> None:
        self.writes += 1
        time.sleep(0.2)  # long enough for every thread to arrive meanwhile
        (directory / "model_index.json").write_text("{}")


def test_concurrent_first_uses_generate_once(tmp_path):
    generators = CountingGenerators()
    fetcher = ModelFetcher(DiskCache(tmp_path, None), S3(S3Settings()), generators)
    entry = ModelConfig(name="toy", backend="diffusers", source="generated://toy")
    assert fetcher.cached(entry) is False
    paths: list[Path] = []
    threads = [
        threading.Thread(target=lambda: paths.append(fetcher.local_path(entry))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert generators.writes == 1 and len(set(paths)) == 1 and len(paths) == 4
    assert (paths[0] / "model_index.json").is_file() and fetcher.cached(entry) is True
    assert not any((tmp_path / "partial").iterdir())
    unknown = ModelConfig(name="u", backend="diffusers", source="generated://nothing")
    with pytest.raises(NotFound):
        fetcher.local_path(unknown)


def test_a_failed_generation_leaves_nothing_behind(tmp_path):
    class Failing(CountingGenerators):
        def write(self, name: str, directory: Path) -> None:
            (directory / "half-written").write_bytes(b"x")
            raise OSError("disk full")

    fetcher = ModelFetcher(DiskCache(tmp_path, None), S3(S3Settings()), Failing())
    entry = ModelConfig(name="toy", backend="diffusers", source="generated://toy")
    with pytest.raises(OSError):
        fetcher.local_path(entry)
    assert not any((tmp_path / "partial").iterdir()) and not any((tmp_path / "entries").iterdir())


def test_tiny_sd_is_generated_the_same_every_time(tmp_path):
    pytest.importorskip("diffusers", reason="the images extra is not installed")
    generators = ModelGenerators()
    digests = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        generators.write("tiny-sd", tmp_path / name)
        files = sorted(p for p in (tmp_path / name).rglob("*") if p.is_file())
        digests.append({str(p.relative_to(tmp_path / name)): _sha256(p) for p in files})
    assert digests[0] == digests[1]
    assert {"model_index.json", "unet/diffusion_pytorch_model.safetensors"} <= set(digests[0])
    size = sum(p.stat().st_size for p in (tmp_path / "first").rglob("*") if p.is_file())
    assert 5e6 < size < 9e6


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
