"""llama.cpp's C API as llama-cpp-python binds it, without the rest of llama-cpp-python.

`import llama_cpp` runs the package's __init__, which also imports its high-level `Llama`:
numpy, its chat formats, Jinja, its grammar code. That is 140 ms of every cold start here, for
code Stratus does not use: it drives llama.cpp through the C API (layers/llama_batch). So the
bindings module (`llama_cpp.llama_cpp`) is imported without the package's __init__
(common/lazy.skipping_inits): a later `import llama_cpp` (the vision projector, the embedding
engine) runs the real __init__, whose `from .llama_cpp import *` finds the same module already
loaded. One shared library, one set of bindings, whoever imports first.

Beside it, the two things Stratus used from the package's internals: a model file (weights and
vocabulary) and a sampler chain.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from common.lazy import skipping_inits

_import_lock = threading.Lock()
_ERROR = 3  # GGML_LOG_LEVEL_ERROR
_CONTINUE = 5  # GGML_LOG_LEVEL_CONT: more of the previous message
_logger_callback: Any = None  # kept alive: llama.cpp holds a pointer to it
_tiles_off = False  # GGML_CPU_TILED_MM set (bindings)


def bindings() -> ModuleType:
    """`llama_cpp.llama_cpp`, the ctypes bindings of llama.cpp's C API, with llama.cpp's log
    reduced to its errors (on stderr, as llama-cpp-python's non-verbose mode has it)."""
    global _tiles_off
    with _import_lock:
        if not _tiles_off:
            # llama.cpp's tiled K-quant products take batches of 8 rows or more, with other
            # numbers than fewer rows: off, for every model, as a sequence's numbers must not
            # depend on its batch (invariant_products). The switch is process-wide and read
            # once, at the first matrix product: so before the library computes anything, even
            # where `llama_cpp` was imported first. Set once (C threads may read the environment).
            os.environ["GGML_CPU_TILED_MM"] = "0"
            _tiles_off = True
        loaded = sys.modules.get("llama_cpp.llama_cpp")
        if loaded is not None:
            return loaded
        if importlib.util.find_spec("llama_cpp") is None:
            raise ImportError("llama-cpp-python is not installed")
        module = skipping_inits("llama_cpp.llama_cpp", ["llama_cpp"])
        _log_errors_only(module)
        return module


def attention_segment(lib: ModuleType) -> int | None:
    """The size of the fixed KV segments the CPU backend computes flash attention in, where it
    is Stratus's build (patches/llama.cpp-fa-segments.patch); None for llama.cpp as released.
    With segments, a token's attention has the same numbers alone as beside others
    (`GGML_FA_SEGMENTS=0` in the environment turns them off, for comparisons)."""
    from layers.llama_threads import library

    try:
        cpu = ctypes.CDLL(str(library(Path(lib.__file__).parent / "lib", "ggml-cpu")))
        size = int(cpu.ggml_cpu_fa_segment())
    except (OSError, AttributeError):
        return None
    return size or None


def invariant_products(model_params: Any) -> None:
    """Keep a model's CPU matrix products on kernels whose every output is the same whatever
    the batch, so a sequence's numbers do not depend on how many rows are decoded beside it
    (its neighbours' tokens, its own draft). Measured on a Q4_K_M model (tests/unit/
    test_llama_context): llama.cpp's repacked weights (Q4_0, Q4_K, IQ4_NL and MXFP4 on AVX2)
    compute batches of 4 rows or more with another kernel than fewer rows, with other numbers.
    Without them, every type takes its one-row kernel or llamafile's tiles, which agree bit for
    bit (llama.cpp's tiled K-quant products, the other such kernel, are off: `bindings`)."""
    model_params.use_extra_bufts = False


def version() -> str:
    from importlib.metadata import version as installed

    return installed("llama_cpp_python")


def _log_errors_only(lib: ModuleType) -> None:
    global _logger_callback
    last = [0]

    def log(level: int, text: bytes, user_data: Any) -> None:
        level = last[0] if level == _CONTINUE else level
        last[0] = level
        if level == _ERROR:
            print(text.decode(errors="replace"), end="", file=sys.stderr, flush=True)

    _logger_callback = lib.llama_log_callback(log)
    lib.llama_log_set(_logger_callback, ctypes.c_void_p(0))


class ModelFile:
    """A GGUF's weights and vocabulary, loaded by llama.cpp."""

    def __init__(self, lib: ModuleType, path: Path, params: Any) -> None:
        self._lib = lib
        if not path.exists():
            raise ValueError(f"Model path does not exist: {path}")
        model = lib.llama_model_load_from_file(str(path).encode(), params)
        if model is None:
            raise ValueError(f"llama.cpp could not load the model file {path}")
        self.model = model
        self.vocab = lib.llama_model_get_vocab(model)

    def close(self) -> None:
        if self.model is not None:
            self._lib.llama_model_free(self.model)
            self.model = None

    def n_vocab(self) -> int:
        return int(self._lib.llama_vocab_n_tokens(self.vocab))

    def add_bos_token(self) -> bool:
        return bool(self._lib.llama_vocab_get_add_bos(self.vocab))

    def token_bos(self) -> int:
        return int(self._lib.llama_vocab_bos(self.vocab))

    def token_eos(self) -> int:
        return int(self._lib.llama_vocab_eos(self.vocab))

    def metadata(self) -> dict[str, str]:
        lib, model = self._lib, self.model
        entries = {}
        for index in range(lib.llama_model_meta_count(model)):
            key = _read(lambda b, n, i=index: lib.llama_model_meta_key_by_index(model, i, b, n))
            value = _read(
                lambda b, n, i=index: lib.llama_model_meta_val_str_by_index(model, i, b, n)
            )
            entries[key] = value
        return entries

    def tokenize(self, text: bytes, add_bos: bool, special: bool) -> list[int]:
        """llama.cpp's tokens for `text`; `special`: control tokens written in it are parsed."""
        lib = self._lib
        size = len(text) + 2  # a token spans at least one byte, beside BOS and EOS
        while True:
            tokens = (lib.llama_token * size)()
            count = lib.llama_tokenize(self.vocab, text, len(text), tokens, size, add_bos, special)
            if count >= 0:
                return list(tokens[:count])
            size = -count  # too small: llama.cpp says how much it needs

    def piece(self, token: int, special: bool) -> bytes:
        """A token's bytes; `special`: control tokens spelled out (`<|im_end|>`), else empty,
        as generation writes them."""
        lib, size = self._lib, 256
        while True:
            buffer = (ctypes.c_char * size)()
            written = lib.llama_token_to_piece(self.vocab, token, buffer, size, 0, special)
            if written >= 0:
                return bytes(buffer[:written])
            size = -written  # too small: llama.cpp says how much it needs


def _read(call: Any) -> str:
    """A string llama.cpp writes into a buffer, retried with the size it asks for."""
    size = 256
    while True:
        buffer = ctypes.create_string_buffer(size)
        written = call(buffer, size)
        if written < size:
            return buffer.value.decode(errors="replace")
        size = written + 1


class SamplerChain:
    """llama.cpp samplers applied in turn; `sampler` is the chain, freed by close()."""

    def __init__(self, lib: ModuleType) -> None:
        self._lib = lib
        self.sampler = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())

    def add(self, sampler: Any) -> None:
        self._lib.llama_sampler_chain_add(self.sampler, sampler)  # the chain owns it now

    def add_logit_bias(self, n_vocab: int, bias: Mapping[int, float]) -> None:
        lib = self._lib
        entries = (lib.llama_logit_bias * len(bias))()
        for entry, (token, value) in zip(entries, bias.items(), strict=True):
            entry.token, entry.bias = token, value
        self.add(lib.llama_sampler_init_logit_bias(n_vocab, len(bias), entries))

    def sample(self, logits: Any) -> int:
        """The token the chain picks from `logits` (a numpy array of the vocabulary's), accepted
        into the chain: what llama_sampler_sample does with a context's logits."""
        import numpy as np

        lib = self._lib
        data = np.zeros(len(logits), dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        data["id"] = np.arange(len(logits), dtype=np.int32)
        data["logit"] = logits
        candidates = lib.llama_token_data_array(
            data=data.ctypes.data_as(lib.llama_token_data_p),
            size=len(logits),
            selected=-1,
            sorted=False,
        )
        lib.llama_sampler_apply(self.sampler, ctypes.byref(candidates))
        token = int(candidates.data[candidates.selected].id)
        lib.llama_sampler_accept(self.sampler, token)
        return token

    def close(self) -> None:
        if self.sampler is not None:
            self._lib.llama_sampler_free(self.sampler)
            self.sampler = None
