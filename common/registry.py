"""The model registry: YAML entries naming a backend, a source and OpenAI-name aliases.

A user registry (one YAML file or a directory of them) is merged over the built-in one: an
entry with the name of a built-in entry replaces it, and a user alias takes over a built-in
alias of the same id. A bad file fails at start with its file, entry and field named.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from common.errors import ModelNotFound

Backend = Literal[
    "llama-cpp",
    "exllamav2",
    "sentence-transformers",
    "faster-whisper",
    "piper",
    "coqui-tts",
    "diffusers",
]
# Requests a model serves at once when its entry sets no `parameters.parallel`: the sequences a
# llama.cpp context generates together (llama.cpp's own server runs 4 by default), the
# requests an embedding batcher merges; engines that do not batch run one at a time.
DEFAULT_PARALLEL = {"llama-cpp": 4, "exllamav2": 16, "sentence-transformers": 16}
SOURCE_SCHEMES = ("pkg://", "file://", "s3://", "hf://", "generated://", "/")
MODEL_ID = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"


class RegistryError(ValueError):
    """A registry file that cannot be used; the message names file, entry and field."""


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    name: str = Field(pattern=MODEL_ID)
    backend: Backend
    source: str
    aliases: tuple[str, ...] = ()
    parameters: dict[str, Any] = Field(default_factory=dict)
    templates: dict[str, str] = Field(default_factory=dict)
    owned_by: str = "stratus"
    created: int = 0
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")  # checked after an S3 download
    # How the model thinks, when its chat template does not tell (layers/reasoning detects it
    # otherwise): a format's name (think, magistral), or none.
    reasoning_format: str | None = Field(None, pattern=r"^(think|magistral|command-r7b|none)$")
    # How the model writes tool calls, when its template does not tell or tells wrong
    # (layers/tool_formats detects it otherwise): a format's name (hermes, llama3, mistral...).
    tool_format: str | None = None
    # A vision model's projector (llama.cpp's mmproj GGUF): a file name beside the model's GGUF
    # (in its directory, package, S3 prefix), or an address of its own (a path, file://, pkg://,
    # s3://), fetched and cached as models are. Images in chat are refused without one.
    mmproj: str | None = None

    @property
    def parallel(self) -> int:
        """Requests this model serves at once: its admission slots, and its engine's batch."""
        if "parallel" in self.parameters:
            return int(self.parameters["parallel"])
        if self.backend == "llama-cpp" and self.parameters.get("embedding"):
            return DEFAULT_PARALLEL["sentence-transformers"]
        return DEFAULT_PARALLEL.get(self.backend, 1)

    @property
    def writes_text(self) -> bool:
        """Whether this model generates text (chat, completions, Messages): a llama.cpp model
        that is not an embedder, or an exllamav2 one."""
        return self.backend == "exllamav2" or (
            self.backend == "llama-cpp" and not self.parameters.get("embedding")
        )

    @property
    def reads_images(self) -> bool:
        """Whether images in chat reach this model: a llama.cpp model with a projector."""
        return self.backend == "llama-cpp" and self.mmproj is not None

    def projector_source(self) -> ModelConfig | None:
        """The projector as a model of its own to fetch, when `mmproj` is an address (a bare
        file name is found beside the model's GGUF)."""
        if self.mmproj is None or not self.mmproj.startswith(SOURCE_SCHEMES):
            return None
        return self.model_copy(update={"source": self.mmproj, "mmproj": None, "sha256": None})

    @field_validator("tool_format")
    @classmethod
    def _known_tool_format(cls, value: str | None, info: ValidationInfo) -> str | None:
        # The formats are the engines' (layers/tool_formats): whoever assembles the registry
        # names them (load_registry's `tool_formats`), asked only when an entry sets one.
        known_formats = (info.context or {}).get("tool_formats")
        if value is not None and known_formats is not None:
            known = list(known_formats())
            if value not in known:
                raise ValueError(f"'{value}' is not a tool-call format; one of: {', '.join(known)}")
        return value

    @field_validator("parameters")
    @classmethod
    def _engine_numbers(cls, value: dict[str, Any]) -> dict[str, Any]:
        parallel = value.get("parallel")
        if parallel is not None and (
            isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= 256
        ):
            raise ValueError("parallel must be a whole number from 1 to 256")
        if not isinstance(value.get("batch_invariant", True), bool):
            raise ValueError("batch_invariant must be true or false")
        poll = value.get("poll", 0)
        if isinstance(poll, bool) or not isinstance(poll, int) or not 0 <= poll <= 100:
            raise ValueError("poll must be a whole number from 0 to 100")
        # YAML reads a bare `off` as false.
        if value.get("speculative", "ngram") not in ("ngram", "off", False):
            raise ValueError("speculative must be ngram or off")
        draft_max = value.get("draft_max", 63)
        if isinstance(draft_max, bool) or not isinstance(draft_max, int) or not 1 <= draft_max < 64:
            raise ValueError("draft_max must be a whole number from 1 to 63")
        return value

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(SOURCE_SCHEMES):
            raise ValueError(
                "must be an absolute path, file://, pkg://, s3://, hf:// or generated:// address"
            )
        return value

    @field_validator("aliases")
    @classmethod
    def _alias_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for alias in value:
            if not re.match(MODEL_ID, alias):
                raise ValueError(f"alias {alias!r} is not a valid model id")
        return value


@dataclass(frozen=True)
class RegisteredModel:
    config: ModelConfig
    user_configured: bool  # from the user's registry rather than the built-in one


class Registry:
    """Resolves a model id (a name or an alias) to its entry."""

    def __init__(self, models: Iterable[RegisteredModel], created: int = 0) -> None:
        self.created = created  # when the registry was loaded: `created` of entries without one
        self._by_name: dict[str, RegisteredModel] = {}
        self._by_id: dict[str, RegisteredModel] = {}
        for model in models:
            self._by_name[model.config.name] = model
        # Names win over aliases; among aliases, user entries win over built-in ones.
        ordered = sorted(self._by_name.values(), key=lambda m: m.user_configured)
        for model in ordered:
            for alias in model.config.aliases:
                self._by_id[alias] = model
        for model in self._by_name.values():
            self._by_id[model.config.name] = model

    def resolve(self, model_id: str) -> ModelConfig:
        try:
            return self._by_id[model_id].config
        except KeyError:
            raise ModelNotFound(model_id) from None

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._by_id

    def ids(self) -> Iterator[tuple[str, RegisteredModel]]:
        """Every id a client may send, each with its entry, names before aliases."""
        yield from ((name, m) for name, m in self._by_name.items())
        yield from (
            (alias, m)
            for alias, m in self._by_id.items()
            if alias not in self._by_name and m.config.name != alias
        )

    @property
    def models(self) -> list[ModelConfig]:
        return [m.config for m in self._by_name.values()]


def load_registry(
    user_path: Path | None = None,
    max_tokens: int | None = None,
    tool_formats: Callable[[], Collection[str]] | None = None,
) -> Registry:
    """The built-in registry with the user's registry (a file or a directory) merged over it.

    `max_tokens` (the operator's STRATUS_MAX_TOKENS) becomes every model's default token budget
    where its entry sets none: a request that names no max_tokens then stops there.
    `tool_formats` names the tool-call formats an entry's `tool_format` may be (asked only when
    one sets it); without it, any name passes.
    """
    context = {"tool_formats": tool_formats} if tool_formats is not None else None
    default_file = resources.files("common") / "default_models.yaml"
    builtin = _parse_entries(default_file.read_text(), "<built-in registry>", context)
    models = [RegisteredModel(c, user_configured=False) for c in builtin]
    if user_path is not None:
        models += [RegisteredModel(c, user_configured=True) for c in _read_user(user_path, context)]
    if max_tokens is not None:
        models = [
            RegisteredModel(_with_default(m.config, "max_tokens", max_tokens), m.user_configured)
            if m.config.writes_text
            else m
            for m in models
        ]
    return Registry(models, created=int(time.time()))


def _with_default(config: ModelConfig, name: str, value: Any) -> ModelConfig:
    if name in config.parameters:
        return config
    return config.model_copy(update={"parameters": {**config.parameters, name: value}})


def _read_user(path: Path, context: dict[str, Any] | None) -> list[ModelConfig]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
    elif path.is_file():
        files = [path]
    else:
        raise RegistryError(f"{path}: no such registry file or directory")
    configs: list[ModelConfig] = []
    seen: dict[str, str] = {}
    for file in files:
        for config in _parse_entries(file.read_text(), str(file), context):
            if config.name in seen:
                raise RegistryError(
                    f"{file}: model '{config.name}' is already defined in {seen[config.name]}"
                )
            seen[config.name] = str(file)
            configs.append(config)
    return configs


def _parse_entries(text: str, origin: str, context: dict[str, Any] | None) -> list[ModelConfig]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{origin}: not valid YAML: {exc}") from None
    if document is None:
        return []
    if isinstance(document, dict) and "models" in document:
        document = document["models"]
    entries = document if isinstance(document, list) else [document]
    configs = []
    for index, entry in enumerate(entries):
        where = f"{origin}: entry {index}"
        if not isinstance(entry, dict):
            raise RegistryError(f"{where}: must be a mapping with name, backend and source")
        if isinstance(entry.get("name"), str):
            where += f" ({entry['name']})"
        try:
            configs.append(ModelConfig.model_validate(entry, context=context))
        except ValidationError as exc:
            problems = "; ".join(
                f"field '{'.'.join(str(p) for p in e['loc']) or 'entry'}': {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise RegistryError(f"{where}: {problems}") from None
    names = [c.name for c in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RegistryError(f"{origin}: model '{duplicates[0]}' is defined twice")
    return configs
