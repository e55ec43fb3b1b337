"""llama.cpp's own reading of an image, with no Stratus in between: what the vision tests hold
Stratus's answers to. mtmd (llama.cpp's multimodal library) tokenizes a prompt with one image
at its marker, `<image>`, and its helper evaluates it."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def _tokenized(directory: Path, prompt: str, image: bytes) -> Iterator[tuple[Any, Any, Any]]:
    """(the model, its projector, the chunks of `prompt`) for the model in `directory`
    (model.gguf and mmproj.gguf), freed after."""
    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd
    from llama_cpp._internals import LlamaModel
    from llama_cpp._logger import llama_log_callback, set_verbose

    set_verbose(False)
    mtmd.mtmd_log_set(llama_log_callback, ctypes.c_void_p(0))
    mtmd.mtmd_helper_log_set(llama_log_callback, ctypes.c_void_p(0))
    model = LlamaModel(path_model=str(directory / "model.gguf"),
                       params=llama_cpp.llama_model_default_params(), verbose=False)  # fmt: skip
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.warmup, params.print_timings = False, False, False
    projector = mtmd.mtmd_init_from_file(str(directory / "mmproj.gguf").encode(), model.model,
                                         params)  # fmt: skip
    data = (ctypes.c_uint8 * len(image)).from_buffer_copy(image)
    bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(projector, data, len(image), False)
    text = prompt.replace("<image>", mtmd.mtmd_default_marker().decode()).encode()
    parts = mtmd.mtmd_input_text(text, len(text), False, True)
    chunks = mtmd.mtmd_input_chunks_init()
    bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
    try:
        assert mtmd.mtmd_tokenize(projector, chunks, ctypes.byref(parts), bitmaps, 1) == 0
        yield model, projector, chunks
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)
        mtmd.mtmd_free(projector)
        model.close()


def image_places(directory: Path, image: bytes) -> int:
    """The places mtmd gives an image with this projector: its embeddings and the model's own
    tokens around them (tiles, rows, the overview)."""
    import llama_cpp.mtmd_cpp as mtmd

    with _tokenized(directory, "<image>", image) as (_, _, chunks):
        return mtmd.mtmd_helper_get_n_tokens(chunks)


def first_token(directory: Path, prompt: str, image: bytes) -> tuple[str, float]:
    """The most likely first token after `prompt` and its log probability."""
    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd
    import numpy as np

    with _tokenized(directory, prompt, image) as (model, projector, chunks):
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = 2048
        context = llama_cpp.llama_init_from_model(model.model, params)
        try:
            past = llama_cpp.llama_pos(0)
            assert mtmd.mtmd_helper_eval_chunks(projector, context, chunks, 0, 0, 512, True,
                                                ctypes.byref(past)) == 0  # fmt: skip
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(context, -1),
                                           shape=(model.n_vocab(),)).astype(np.float64)  # fmt: skip
        finally:
            llama_cpp.llama_free(context)
        best = int(logits.argmax())
        top = logits.max()
        logprob = float(logits[best] - top - np.log(np.exp(logits - top).sum()))
        piece = model.token_to_piece(best, special=False).rstrip(b"\0")
        return piece.decode(errors="replace"), logprob
