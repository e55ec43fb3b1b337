"""The model store: every handler gets its models here, one load per model per process.

    with store.use(model_id) as model: ...

resolves the id through the registry, fetches the files (local, or S3 through the disk cache)
and loads the engine on first use under a per-model lock, so concurrent cold starts fetch and
load once. Loaded models are reference-counted; an idle one is unloaded after `ttl` seconds
(-1: never, 0: as soon as it is idle), and when more than `max_loaded` models (or more than
`max_bytes` of model files) are loaded, the least recently used idle ones go first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import metering
from common.errors import EngineUnavailable, StratusError
from common.metering import span
from common.registry import ModelConfig, Registry
from common.sources import local_path

log = logging.getLogger("stratus.store")

Loader = Callable[[ModelConfig, Path], Any]
Fetch = Callable[[ModelConfig], Path]


def _local_only(config: ModelConfig) -> Path:
    return local_path(config.name, config.source)


@dataclass(frozen=True)
class Readiness:
    """Whether the models this process preloads (STRATUS_PRELOAD) are ready: `loading` while
    any of them is, and those whose load failed, each with what a request for it would be
    told. A failed model is loaded again by its next request, and is ready once that works."""

    loading: bool
    failed: dict[str, str]

    @property
    def state(self) -> str:
        return "loading" if self.loading else "failed" if self.failed else "ready"


@dataclass
class _Loaded:
    model: Any
    size: int  # bytes of model files: the memory cap's estimate
    refs: int
    last_used: float


class ModelStore:
    def __init__(
        self,
        registry: Registry,
        loader: Loader,
        fetch: Fetch = _local_only,
        *,
        ttl: float = -1,
        max_loaded: int = 0,
        max_bytes: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self._loader = loader
        self._fetch = fetch
        self.ttl = ttl
        self.max_loaded = max_loaded  # 0: no cap
        self.max_bytes = max_bytes  # 0: no cap
        self._clock = clock
        self._loaded: dict[str, _Loaded] = {}
        self._guard = threading.Lock()  # guards _loaded and _load_locks, held briefly
        self._load_locks: dict[str, threading.Lock] = {}
        self._reaper: threading.Thread | None = None
        self._preloading: set[str] = set()  # guarded too
        self._preload_failed: dict[str, str] = {}

    @contextmanager
    def use(self, model_id: str) -> Iterator[Any]:
        config = self.registry.resolve(model_id)
        model = self._acquire(config)
        try:
            yield model
        finally:
            self._release(config.name)

    def loaded(self) -> list[str]:
        with self._guard:
            return list(self._loaded)

    def readiness(self) -> Readiness:
        with self._guard:
            return Readiness(bool(self._preloading), dict(self._preload_failed))

    def collect(self) -> list[str]:
        """Unloads idle models past their TTL, then any beyond the caps. Returns their names."""
        with self._guard:
            now = self._clock()
            expired = [
                name
                for name, slot in self._loaded.items()
                if slot.refs == 0 and self.ttl >= 0 and now - slot.last_used >= self.ttl
            ]
            unloaded = [(name, self._loaded.pop(name)) for name in expired]
            unloaded += self._over_caps(keep=None)
        return self._close(unloaded, "idle" if expired else "over the cap")

    def start_reaper(self) -> threading.Thread | None:
        """A daemon thread that unloads idle models on time (only with a TTL above 0); one per
        store, however many applications share it."""
        if self.ttl <= 0 or self._reaper is not None:
            return self._reaper
        interval = min(self.ttl / 2, 30.0)

        def reap() -> None:
            while True:
                time.sleep(interval)
                self.collect()

        thread = threading.Thread(target=reap, name="model-reaper", daemon=True)
        thread.start()
        self._reaper = thread
        return thread

    def close(self) -> None:
        with self._guard:
            unloaded = list(self._loaded.items())
            self._loaded.clear()
        self._close(unloaded, "shutting down")

    def preload(self, model_ids: Sequence[str]) -> threading.Thread | None:
        """Starts loading these models (registry names or aliases), one after another, on a
        background thread, and returns it; None when there are none. They are kept as any
        loaded model is (the TTL and the caps apply). A request for a model still loading
        waits for that load, counted as its own `load` time. An unknown name raises here, at
        start; a model that fails to load is logged, and loaded again by its first request.
        readiness() tells how the loads stand."""
        configs = [self.registry.resolve(model_id) for model_id in model_ids]
        if not configs:
            return None
        with self._guard:
            self._preloading.update(config.name for config in configs)

        def load_all() -> None:
            for config in configs:
                failure = None
                try:
                    self._acquire(config)
                except StratusError as exc:  # a request would meet it too: said, not the end
                    failure = exc.message
                    log.error("preloading model %s failed: %s", config.name, exc.message)
                except Exception:
                    failure = f"The model '{config.name}' could not be loaded."
                    log.exception("preloading model %s failed", config.name)
                else:
                    self._release(config.name)
                with self._guard:
                    self._preloading.discard(config.name)
                    if failure is not None:
                        self._preload_failed[config.name] = failure

        thread = threading.Thread(target=load_all, name="model-preload", daemon=True)
        thread.start()
        return thread

    def _acquire(self, config: ModelConfig) -> Any:
        name = config.name
        if (model := self._take(name)) is not None:
            metering.model_source("memory")
            return model
        lock = self._load_lock(name)
        with span("load"):  # or the wait for a load already under way (a preload's)
            lock.acquire()
        try:
            if (model := self._take(name)) is not None:
                metering.model_source("memory")
                return model  # loaded while we waited
            path = self._fetch(config)
            config = self._with_projector(config)
            with span("load"):
                model = self._load(config, path)
            with self._guard:
                self._loaded[name] = _Loaded(model, _size(path), 1, self._clock())
                self._preload_failed.pop(name, None)  # loaded by a later request
                unloaded = self._over_caps(keep=name)
        finally:
            lock.release()
        self._close(unloaded, "over the cap")
        return model

    def _with_projector(self, config: ModelConfig) -> ModelConfig:
        """A projector named by an address of its own is fetched (and cached) as models are;
        the engine gets its local path. A bare file name is the engine's to find beside the
        model."""
        source = config.projector_source()
        if source is None:
            return config
        return config.model_copy(update={"mmproj": str(self._fetch(source))})

    def _take(self, name: str) -> Any:
        with self._guard:
            slot = self._loaded.get(name)
            if slot is None:
                return None
            slot.refs += 1
            return slot.model

    def _release(self, name: str) -> None:
        with self._guard:
            slot = self._loaded.get(name)
            if slot is None:
                return
            slot.refs -= 1
            slot.last_used = self._clock()
            done = slot.refs == 0 and self.ttl == 0
            unloaded = [(name, self._loaded.pop(name))] if done else []
        self._close(unloaded, "idle (ttl 0)")

    def _over_caps(self, keep: str | None) -> list[tuple[str, _Loaded]]:
        """Idle models to unload, least recently used first, until the caps hold (under guard)."""
        unloaded = []
        idle = sorted(
            (n for n, s in self._loaded.items() if s.refs == 0 and n != keep),
            key=lambda n: self._loaded[n].last_used,
        )
        for name in idle:
            count = len(self._loaded)
            size = sum(s.size for s in self._loaded.values())
            if (not self.max_loaded or count <= self.max_loaded) and (
                not self.max_bytes or size <= self.max_bytes
            ):
                break
            unloaded.append((name, self._loaded.pop(name)))
        return unloaded

    def _close(self, unloaded: list[tuple[str, _Loaded]], why: str) -> list[str]:
        for name, slot in unloaded:
            closer = getattr(slot.model, "close", None)
            if closer is not None:
                closer()
            log.info("unloaded model %s (%s)", name, why)
        return [name for name, _ in unloaded]

    def _load_lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._load_locks.setdefault(name, threading.Lock())

    def _load(self, config: ModelConfig, path: Path) -> Any:
        started = time.perf_counter()
        try:
            model = self._loader(config, path)
        except StratusError:
            raise
        except Exception:
            log.exception("loading model %s from %s failed", config.name, path)
            raise EngineUnavailable(f"The model '{config.name}' could not be loaded.") from None
        log.info(
            "loaded model %s (%s) from %s in %.2fs",
            config.name,
            config.backend,
            config.source,
            time.perf_counter() - started,
        )
        return model


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
