"""A GGUF's chat template, read without loading the model: what `stratus models` shows the
formats of."""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Any


@functools.cache
def _quiet() -> Any:
    from layers.llama_api import bindings

    return bindings().llama_log_callback(lambda level, text, user_data: None)


def chat_template_of(path: Path) -> str | None:
    """The chat template in a GGUF's metadata, read with its vocabulary only (no weights)."""
    from layers.llama_api import bindings

    llama_cpp = bindings()
    llama_cpp.llama_log_set(_quiet(), ctypes.c_void_p())  # the loader's dump is not the answer
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if model is None:
        return None
    try:
        size = 1 << 20
        buffer = ctypes.create_string_buffer(size)
        written = llama_cpp.llama_model_meta_val_str(
            model, b"tokenizer.chat_template", buffer, size
        )
        return buffer.value.decode(errors="replace") if written >= 0 else None
    finally:
        llama_cpp.llama_model_free(model)
