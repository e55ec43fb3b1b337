"""What a registry entry makes of a llama.cpp model: its files (the GGUF, its projector), the
engine's settings, and the fingerprint of both."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.errors import EngineUnavailable
from common.registry import ModelConfig
from layers import EngineOptions
from layers.llama_threads import POLL
from layers.speculation import DraftSettings

# Registry `parameters` that configure the engine (the rest are request defaults).
MODEL_PARAMETERS = ("n_gpu_layers", "use_mmap", "use_mlock")
CONTEXT_PARAMETERS = ("n_ctx", "n_batch", "n_ubatch", "rope_freq_base", "rope_freq_scale")
# mmproj_threads: the projector's threads (default: the engine's). A small vision tower's graph
# is mostly synchronisation between threads: one thread encodes tiny-vlm's tiles in 3 ms, two
# in 3 ms back to back but 75-230 ms after a tenth of a second idle on these machines.
# batch_invariant: a sequence's numbers never depend on its neighbours (layers/llama_batch; on
# by default; off saves the ballast token of a lone sequence past 224 cells, 27% of its
# decoding on SmolLM2-135M here: docs/PERFORMANCE.md, and lets llama.cpp repack Q4_0, Q4_K,
# IQ4_NL and MXFP4 weights for its faster batch kernels: layers/llama_api.invariant_products).
ENGINE_PARAMETERS = (
    *MODEL_PARAMETERS, *CONTEXT_PARAMETERS, "flash_attn", "parallel", "mmproj_threads",
    "batch_invariant", "token_prefix_reuse", "poll", "speculative", "draft_max",
)  # fmt: skip
# token_prefix_reuse: prefixes reused to the token in a prompt's tail, where measured exact
# (layers/prefix_cache; on by default, `false` keeps reuse to whole 64-token blocks).
# speculative: `ngram` (the default) drafts tokens from the sequence's own prompt and output,
# `off` never; draft_max: the longest draft (layers/speculation; exact either way).
# poll: how long the compute threads wait for the next graph before they sleep (0-100,
# llama-server's `--poll`; layers/llama_threads).


def llama_kwargs(parameters: Mapping[str, Any], options: EngineOptions) -> dict[str, Any]:
    """The engine settings from a registry entry and process options (llama_cpp.Llama's
    names and defaults; n_ctx is each sequence's context)."""
    kwargs: dict[str, Any] = {
        "n_ctx": 2048,
        "n_batch": 512,
        # Flash attention where the device has it (llama.cpp's server default; 14% more tokens
        # per second here); `flash_attn: false` turns it off.
        "flash_attn": "auto",
        "batch_invariant": True,
        "token_prefix_reuse": True,
        "poll": POLL,
        "n_threads": options.threads,
        "n_threads_batch": options.threads,
        "verbose": False,
    }
    kwargs.update({k: parameters[k] for k in ENGINE_PARAMETERS if k in parameters})
    return kwargs


def draft_settings(kwargs: Mapping[str, Any]) -> DraftSettings:
    """The registry's `speculative` and `draft_max` (checked there) as the scheduler's."""
    mode = "off" if kwargs.get("speculative") in ("off", False) else "ngram"
    longest = int(kwargs.get("draft_max", DraftSettings.longest))
    return DraftSettings(mode=mode, longest=longest, first=min(DraftSettings.first, longest))


def fingerprint(path: Path, kwargs: Mapping[str, Any], engine_version: str) -> str:
    """OpenAI's `system_fingerprint`: the same for two requests only when the engine, its
    version, the model file and the settings that shape its numbers are the same.

    The file is identified by its size and a hash of its first and last MiB (the GGUF header,
    metadata and the tail of the tensors): hashing a multi-GB file at every cold start would
    cost seconds.
    """
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as file:
        digest.update(file.read(1 << 20))
        file.seek(max(size - (1 << 20), 0))
        digest.update(file.read(1 << 20))
    # Parallelism, batch sizes and polling do not change a sequence's numbers (layers/llama_batch).
    ignored = (
        *("verbose", "n_threads_batch", "parallel", "n_batch", "n_ubatch", "poll"),
        *("speculative", "draft_max"),  # drafts change the speed, never the numbers
    )
    shaping = {k: kwargs[k] for k in sorted(kwargs) if k not in ignored}
    digest.update(f"llama-cpp-python {engine_version} {size} {shaping}".encode())
    return "fp_" + digest.hexdigest()[:12]


def gguf_file(config: ModelConfig, path: Path) -> Path:
    """The GGUF file of a model: the path itself, or in a directory model `parameters.file`
    or its only .gguf file."""
    if path.is_file():
        return path
    if "file" in config.parameters:
        return path / str(config.parameters["file"])
    candidates = sorted(path.rglob("*.gguf"))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise EngineUnavailable(
            f"The model '{config.name}' is a directory with {len(candidates)} .gguf files "
            f"({found}); name one with `parameters: {{file: NAME}}` in its registry entry."
        )
    return candidates[0]


def projector_file(config: ModelConfig, path: Path) -> Path:
    """The model's projector: `mmproj` as a path (the store has fetched one named by an
    address), or a file name beside the GGUF."""
    assert config.mmproj is not None
    named = Path(config.mmproj)
    if named.is_absolute():
        return named
    return (path if path.is_dir() else path.parent) / named
