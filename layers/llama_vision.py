"""A llama.cpp model's projector (its `mmproj` GGUF), through llama.cpp's multimodal library.

mtmd turns a prompt's text and images into chunks: text tokens, and for each image the model's
own wrapping (Gemma 3's <start_of_image>, SmolVLM's tiles with their row and column tokens,
Qwen2-VL's vision markers) around runs of embeddings. Those runs become the placeholders of a
layers/media_prompt.Prompt; the scheduler has each one evaluated here, in its turn.
"""

from __future__ import annotations

import ctypes
import logging
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from common.errors import EngineUnavailable, InvalidRequest
from common.turns import Picture
from layers.media_prompt import MediaSpan, Prompt, placeholders

log = logging.getLogger(__name__)

_TEXT_CHUNK = 0


class Part(NamedTuple):
    """A piece of the prompt: text (its special tokens parsed or not), or an image."""

    text: str | None = None
    special: bool = False
    image: Picture | None = None


class Projector:
    """An mtmd context beside a llama.cpp model; `prompt` is safe from any thread (mtmd's
    tokenizer is), `evaluate` runs on the scheduler thread only."""

    def __init__(self, path: Path, model: Any, threads: int, n_batch: int) -> None:
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd
        from llama_cpp._logger import llama_log_callback

        self._mtmd, self._lib, self._n_batch = mtmd, llama_cpp, n_batch
        # Its log goes where llama.cpp's does (errors only): every image prints a dozen lines.
        mtmd.mtmd_log_set(llama_log_callback, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(llama_log_callback, ctypes.c_void_p(0))
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.n_threads = threads
        params.print_timings = False
        params.warmup = False
        self._handle = mtmd.mtmd_init_from_file(str(path).encode(), model, params)
        if not self._handle:
            raise EngineUnavailable(
                f"The projector {path.name} could not be loaded: is it the mmproj GGUF made "
                "for this model?"
            )
        if not mtmd.mtmd_support_vision(self._handle):
            mtmd.mtmd_free(self._handle)
            raise EngineUnavailable(f"The projector {path.name} does not read images.")

    def close(self) -> None:
        if self._handle:
            self._mtmd.mtmd_free(self._handle)
            self._handle = None

    def prompt(self, parts: Sequence[Part], first: Sequence[int] = ()) -> Prompt:
        """The places of `parts` after the tokens `first` (a beginning-of-sequence token): text
        tokenized as the model's, each image as mtmd chunks it (the chunks are freed with the
        last prompt that holds them)."""
        mtmd = self._mtmd
        keep: list[Any] = []  # the ctypes objects mtmd reads until it returns
        pointers = []
        for part in parts:
            piece = mtmd.mtmd_input_part()
            if part.image is None:
                data = (part.text or "").encode()
                text = mtmd.mtmd_input_text(data, len(data), False, part.special)
                keep += [data, text]
                piece.text = ctypes.pointer(text)
            else:
                piece.bitmap = self._bitmap(part.image)
                keep.append(_Bitmap(mtmd, piece.bitmap))
            keep.append(piece)
            pointers.append(ctypes.pointer(piece))
        array = (ctypes.POINTER(mtmd.mtmd_input_part) * len(pointers))(*pointers)
        chunks = _Chunks(mtmd)
        status = mtmd.mtmd_tokenize_from_parts(
            self._handle, chunks.handle, array, len(pointers), False
        )
        if status != 0:
            image = next((p.image for p in parts if p.image is not None), None)
            raise InvalidRequest(
                "The model's projector could not read this image.",
                param=image.param if image else "messages",
                code="invalid_image",
            )
        return self._places(chunks, list(first))

    def _bitmap(self, picture: Picture) -> Any:
        mtmd = self._mtmd
        pixels = (ctypes.c_uint8 * len(picture.rgb)).from_buffer_copy(picture.rgb)
        bitmap = mtmd.mtmd_bitmap_init(picture.width, picture.height, pixels)
        if not bitmap:
            raise InvalidRequest(
                "The image could not be read.", param=picture.param, code="invalid_image"
            )
        mtmd.mtmd_bitmap_set_id(bitmap, picture.digest.encode())
        return bitmap

    def _places(self, chunks: _Chunks, places: list[int]) -> Prompt:
        """mtmd's chunks as places. An image's chunks (SmolVLM's tiles, with their row and
        column tokens between them) are one span, evaluated in one go: the streams running
        beside it wait for one image, and its tiles follow each other without a step between
        (two engine threads left apart for a step meet again slowly on small machines)."""
        items = [
            self._item(chunks, i) for i in range(self._mtmd.mtmd_input_chunks_size(chunks.handle))
        ]
        spans: list[MediaSpan] = []
        start = 0
        while start < len(items):
            image = items[start].image
            if image is None:
                places += items[start].places
                start += 1
                continue
            # The image's last chunk: its text chunks between tiles go with it.
            end = max(k for k in range(start, len(items)) if items[k].image == image) + 1
            run = items[start:end]
            length = sum(len(item.places) for item in run)
            positions = sum(item.positions for item in run)
            chunks_of = tuple(item.chunk for item in run)
            spans.append(MediaSpan(len(places), length, positions, chunks_of))
            places += [place for item in run for place in item.places]
            start = end
        return Prompt(places, spans, owner=chunks)

    def _item(self, chunks: _Chunks, i: int) -> _Item:
        mtmd = self._mtmd
        chunk = mtmd.mtmd_input_chunks_get(chunks.handle, i)
        if mtmd.mtmd_input_chunk_get_type(chunk) == _TEXT_CHUNK:
            count = ctypes.c_size_t()
            tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
            text = tokens[: count.value]
            return _Item(chunk, None, text, len(text))
        length = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
        # The chunk's id is its image's digest; i tells one tile of it from another.
        image = (mtmd.mtmd_input_chunk_get_id(chunk) or b"").decode()
        positions = mtmd.mtmd_input_chunk_get_n_pos(chunk)
        return _Item(chunk, image, placeholders(f"{image}/{i}", length), positions)

    def evaluate(
        self, context: Any, chunks: Any, position: int, seq_id: int, logits_last: bool
    ) -> None:
        """Decodes an image's chunks into sequence `seq_id`'s stream of `context` from
        `position` on: each tile encoded by the projector and its embeddings decoded (Gemma 3's
        bidirectional attention over an image included), the text between tiles as text."""
        if chunks is None:
            raise EngineUnavailable("An image was evaluated twice; please retry the request.")
        for k, chunk in enumerate(chunks):
            after = self._lib.llama_pos(position)  # the helper adds a text chunk's tokens to it
            status = self._mtmd.mtmd_helper_eval_chunk_single(
                self._handle,
                context,
                chunk,
                position,
                seq_id,
                self._n_batch,
                logits_last and k == len(chunks) - 1,
                ctypes.byref(after),
            )
            if status != 0:
                raise EngineUnavailable(f"llama.cpp could not evaluate an image (status {status}).")
            position = after.value


class _Item(NamedTuple):
    """One of mtmd's chunks: text (image None) or an image's tile (image: its digest)."""

    chunk: Any
    image: str | None
    places: list[int]
    positions: int


class _Bitmap:
    """An mtmd bitmap, freed when the tokenizer no longer needs it."""

    def __init__(self, mtmd: Any, handle: Any) -> None:
        weakref.finalize(self, mtmd.mtmd_bitmap_free, handle)


class _Chunks:
    """mtmd's chunks of one prompt (the images' preprocessed pixels are in them): freed when
    the last prompt holding them is collected."""

    def __init__(self, mtmd: Any) -> None:
        self.handle = mtmd.mtmd_input_chunks_init()
        weakref.finalize(self, mtmd.mtmd_input_chunks_free, self.handle)
