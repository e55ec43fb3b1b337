"""Inference engines, one module per engine, each behind a small per-task interface.

Engines are imported only when a model of theirs is loaded: importing this package or a
handler loads nothing heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import EngineUnavailable
from common.registry import ModelConfig

# backend name -> (module, loader function, pip extra that installs it)
_ENGINES: dict[str, tuple[str, str, str]] = {
    "llama-cpp": ("layers.llama_cpp", "load", "llama"),
    "exllamav2": ("layers.exllamav2", "load", "exllamav2"),
    "sentence-transformers": ("layers.sentence_transformers", "load", "embeddings"),
    "piper": ("layers.piper", "load", "audio"),
    "faster-whisper": ("layers.faster_whisper", "load", "audio"),
    "coqui-tts": ("layers.coqui_tts", "load", "coqui"),
    "diffusers": ("layers.diffusers", "load", "images"),
}
# generated://NAME -> (module with VERSION and generate(directory), pip extra it needs)
_GENERATED: dict[str, tuple[str, str]] = {
    "tiny-sd": ("layers.tiny_sd", "images"),
    "tiny-vlm": ("layers.tiny_vlm", "vision"),
}


@dataclass(frozen=True)
class EngineOptions:
    """Process-wide engine settings, from Settings at the entry point."""

    threads: int
    max_audio_seconds: float = 3600.0  # the longest audio a transcription decodes


def make_loader(options: EngineOptions):
    """The store's loader: (model config, local path) -> a loaded engine."""

    def load(config: ModelConfig, path: Path) -> Any:
        try:
            module_name, function, extra = _ENGINES[config.backend]
        except KeyError:
            raise EngineUnavailable(
                f"The backend '{config.backend}' of model '{config.name}' is not available "
                "in this server."
            ) from None
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise EngineUnavailable(
                f"The backend '{config.backend}' needs `pip install stratus[{extra}]` "
                f"({exc.name} is missing)."
            ) from None
        return getattr(module, function)(config, path, options)

    return load


class ModelGenerators:
    """The models Stratus writes itself (the fetcher's Generators): modules in this package,
    imported when one is first needed."""

    def version(self, name: str) -> str | None:
        if name not in _GENERATED:
            return None
        return str(importlib.import_module(_GENERATED[name][0]).VERSION)

    def write(self, name: str, directory: Path) -> None:
        module_name, extra = _GENERATED[name]
        try:
            importlib.import_module(module_name).generate(directory)
        except ImportError as exc:
            raise EngineUnavailable(
                f"Generating the model '{name}' needs `pip install stratus[{extra}]` "
                f"({exc.name} is missing)."
            ) from None
