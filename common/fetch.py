"""Materialises a model's source as local files: local paths as they are, S3 through the cache.

A generated:// model (one Stratus writes itself, such as tiny-sd) is written into the disk cache
on first use, in the cache's temporary directory, renamed into place when whole, under the
cache's file lock: concurrent first uses, threads or processes, generate it once.

For S3, the object (or every object under a prefix) is described first; the cache key holds
its ETags and versions, so an updated object is a new entry and a stale one is never served.
If S3 cannot be reached, the newest cached copy is served, and the log says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from common import metering
from common.disk_cache import DiskCache
from common.errors import EngineUnavailable, StratusError
from common.metering import span
from common.registry import ModelConfig
from common.s3 import S3, RemoteObject, S3Unreachable
from common.sources import S3Source, local_path, not_available, parse_generated, parse_s3

log = logging.getLogger("stratus.fetch")


class Progress(Protocol):
    """Told the size of a download once it starts, then the bytes as they arrive."""

    def start(self, model_name: str, total_bytes: int) -> None: ...

    def advance(self, received_bytes: int) -> None: ...


class Generators(Protocol):
    """The models Stratus writes itself, by the name in generated://NAME."""

    def version(self, name: str) -> str | None:
        """The generator's version (part of the cache key); None if there is no such model."""
        ...

    def write(self, name: str, directory: Path) -> None: ...


class ModelFetcher:
    def __init__(self, cache: DiskCache, s3: S3, generators: Generators | None = None) -> None:
        self.cache = cache
        self.s3 = s3
        self.generators = generators

    def local_path(self, config: ModelConfig, progress: Progress | None = None) -> Path:
        if (generated := parse_generated(config.source)) is not None:
            with span("fetch"):
                return self._generated(config, generated)
        source = parse_s3(config.source)
        if source is None:
            metering.model_source("local")
            return local_path(config.name, config.source)
        with span("fetch"):
            return self._from_s3(config, source, progress)

    def cached(self, config: ModelConfig) -> bool | None:
        """Whether a copy is in the disk cache (None: the source is local, nothing to cache)."""
        if (generated := parse_generated(config.source)) is not None:
            key = self._generated_key(config, generated)
            return key is not None and self.cache.get(key) is not None
        if parse_s3(config.source) is None:
            return None
        return self.cache.latest(config.source) is not None

    def _generated_key(self, config: ModelConfig, name: str) -> str | None:
        version = self.generators.version(name) if self.generators else None
        if version is None:
            return None
        return hashlib.sha256(f"{config.source}@{version}".encode()).hexdigest()[:32]

    def _generated(self, config: ModelConfig, name: str) -> Path:
        key = self._generated_key(config, name)
        if key is None or self.generators is None:
            raise not_available(config.name, f"would be generated, but '{name}' is unknown here")
        entry = self.cache.get(key)
        metering.model_source("disk" if entry else "fetched")
        if entry is None:
            started = time.perf_counter()
            meta = {"source": config.source, "size": 0}
            entry, filled = self.cache.fill(key, meta, self._writer(name, meta))
            if filled:
                log.info(
                    "generated model %s (%s) in %.2fs",
                    config.name,
                    config.source,
                    time.perf_counter() - started,
                )
                self.cache.evict(keep={key})
        self.cache.touch(entry)
        return entry.data

    def _writer(self, name: str, meta: dict) -> Callable[[Path], None]:
        def write(data: Path) -> None:
            assert self.generators is not None
            self.generators.write(name, data)
            meta["size"] = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())

        return write

    def _from_s3(self, config: ModelConfig, source: S3Source, progress: Progress | None) -> Path:
        try:
            objects = self.s3.describe(config.name, source)
        except S3Unreachable:
            stale = self.cache.latest(config.source)
            if stale is None:
                raise
            log.warning(
                "S3 unreachable: serving model %s from its cached copy of %s",
                config.name,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(stale.meta["created"])),
            )
            metering.model_source("disk")
            return self._model_path(stale.data, source)
        key = _cache_key(config.source, objects)
        entry = self.cache.get(key)
        if entry is not None:
            metering.model_source("disk")
        else:
            started = time.perf_counter()
            meta = {
                "source": config.source,
                "objects": [o.__dict__ for o in objects],
                "size": sum(o.size for o in objects),
            }
            entry, filled = self.cache.fill(
                key, meta, lambda data: self._download(config, source, objects, data, progress)
            )
            metering.model_source("fetched", meta["size"] if filled else 0)
            if filled:
                seconds = time.perf_counter() - started
                log.info(
                    "fetched model %s from %s: %.1f MB in %.2fs",
                    config.name,
                    config.source,
                    meta["size"] / 1e6,
                    seconds,
                )
                self.cache.evict(keep={key})
        self.cache.touch(entry)
        return self._model_path(entry.data, source)

    def _download(
        self,
        config: ModelConfig,
        source: S3Source,
        objects: list[RemoteObject],
        data: Path,
        progress: Progress | None,
    ) -> None:
        # Every name is checked before anything is written: an object key with `..` or a
        # leading `/` must not reach outside the entry's directory.
        targets = [
            (obj, _confined(data, _relative_name(source, obj), config.name)) for obj in objects
        ]
        if progress is not None:
            progress.start(config.name, sum(o.size for o in objects))
        for obj, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            self.s3.download(config.name, source, obj, target, progress and progress.advance)
            if target.stat().st_size != obj.size:
                raise S3Unreachable(config.name)  # a short read: never cached
        if config.sha256 and not source.is_prefix:
            [obj] = objects
            _verify_sha256(config, data / _relative_name(source, obj))

    @staticmethod
    def _model_path(data: Path, source: S3Source) -> Path:
        if source.is_prefix:
            return data
        return data / source.key.rsplit("/", 1)[-1]


def _relative_name(source: S3Source, obj: RemoteObject) -> str:
    if source.is_prefix:
        return obj.key[len(source.key) :]
    return obj.key.rsplit("/", 1)[-1]


def _confined(data: Path, name: str, model_name: str) -> Path:
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in ("..", ".") for part in parts):
        # The log has the key; the client only learns that the model is unusable.
        log.error("model %s: the object name %r would land outside its directory", model_name, name)
        raise EngineUnavailable(
            f"The model '{model_name}' cannot be fetched: one of its files has a name that is "
            "not allowed (an operator must fix the model's objects)."
        )
    return data / name


def _cache_key(source: str, objects: list[RemoteObject]) -> str:
    identity = json.dumps([source, sorted((o.key, o.etag, o.version) for o in objects)])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def _verify_sha256(config: ModelConfig, path: Path) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    if digest.hexdigest() != config.sha256:
        log.error(
            "model %s: sha256 %s, expected %s", config.name, digest.hexdigest(), config.sha256
        )
        raise IntegrityError(config.name)


class IntegrityError(StratusError):
    """The download does not match the registry's sha256: a server-side problem, never cached."""

    status = 500
    type = "server_error"
    code = "model_integrity_error"

    def __init__(self, model_name: str) -> None:
        super().__init__(f"The files of model '{model_name}' do not match their registered sha256.")
