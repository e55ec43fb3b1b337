"""The model store: one load per model per process, shared by every handler.

`with store.use(model_id) as model:` resolves the id through the registry, loads the model on
first use under a per-model lock (concurrent cold starts load once), and hands out the engine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common.errors import EngineUnavailable, StratusError
from common.registry import ModelConfig, Registry
from common.sources import local_path

log = logging.getLogger("stratus.store")

Loader = Callable[[ModelConfig, Path], Any]
PathResolver = Callable[[ModelConfig], Path]


def _local_path(config: ModelConfig) -> Path:
    return local_path(config.name, config.source)


class ModelStore:
    def __init__(
        self, registry: Registry, loader: Loader, resolve_path: PathResolver = _local_path
    ) -> None:
        self.registry = registry
        self._loader = loader
        self._resolve_path = resolve_path
        self._loaded: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @contextmanager
    def use(self, model_id: str) -> Iterator[Any]:
        config = self.registry.resolve(model_id)
        yield self._get(config)

    def is_loaded(self, model_id: str) -> bool:
        return self.registry.resolve(model_id).name in self._loaded

    def _get(self, config: ModelConfig) -> Any:
        model = self._loaded.get(config.name)
        if model is not None:
            return model
        with self._lock_for(config.name):
            model = self._loaded.get(config.name)
            if model is None:
                model = self._load(config)
                self._loaded[config.name] = model
        return model

    def _lock_for(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    def _load(self, config: ModelConfig) -> Any:
        path = self._resolve_path(config)
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
