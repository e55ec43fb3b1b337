"""llama.cpp (CPU, GGUF) behind the TextModel interface, through llama-cpp-python."""

from __future__ import annotations

import ctypes
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.errors import EngineUnavailable, InvalidRequest
from common.registry import ModelConfig
from layers import EngineOptions
from layers.prefix_cache import Block, prompt_blocks, reusable_blocks
from layers.text import ChatTurn, Sampling

# Registry `parameters` that configure the engine (the rest are request defaults).
ENGINE_PARAMETERS = (
    "n_ctx",
    "n_batch",
    "n_ubatch",
    "n_gpu_layers",
    "use_mmap",
    "use_mlock",
    "flash_attn",
    "rope_freq_base",
    "rope_freq_scale",
)
RANDOM_SEED = 0xFFFFFFFF  # llama.cpp draws a fresh seed for this value
PENALTY_WINDOW = 64  # tokens the repetition penalties look back over (llama.cpp's default)
_PIECE_BUFFER = 256


def llama_kwargs(parameters: Mapping[str, Any], options: EngineOptions) -> dict[str, Any]:
    """Keyword arguments for llama_cpp.Llama from a registry entry and process options."""
    kwargs: dict[str, Any] = {
        "n_ctx": 2048,
        "n_threads": options.threads,
        "n_threads_batch": options.threads,
        "verbose": False,
    }
    kwargs.update({k: parameters[k] for k in ENGINE_PARAMETERS if k in parameters})
    return kwargs


def load(config: ModelConfig, path: Path, options: EngineOptions) -> Any:
    if config.parameters.get("embedding"):
        from layers.llama_cpp_embeddings import LlamaCppEmbeddingModel

        return LlamaCppEmbeddingModel(config, gguf_file(config, path), options)
    return LlamaCppTextModel(config, gguf_file(config, path), options)


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


class LlamaCppTextModel:
    def __init__(self, config: ModelConfig, path: Path, options: EngineOptions) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.name = config.name
        self._llama_cpp = llama_cpp
        self._llm = llama_cpp.Llama(
            model_path=str(path), **llama_kwargs(config.parameters, options)
        )
        self.context_length: int = self._llm.n_ctx()
        self.vocab_size: int = self._llm.n_vocab()
        self._vocab = self._llm._model.vocab
        self._add_bos: bool = self._llm._model.add_bos_token()
        self._pieces: dict[int, bytes] = {}
        self._cached_tokens: list[int] = []
        self._cached_blocks: list[Block] = []
        # llama.cpp contexts are not thread-safe: one generation at a time per model.
        self._lock = threading.Lock()

        template = config.templates.get("chat") or self._llm.metadata.get("tokenizer.chat_template")
        self._formatter = None
        if template:
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self._llm.token_eos()),
                bos_token=self._token_text(self._llm.token_bos()),
            )

    def close(self) -> None:
        with self._lock:  # never under a running generation
            self._llm.close()

    def chat_prompt(self, turns: Sequence[ChatTurn]) -> str:
        messages = [{"role": t.role, "content": t.content} for t in turns]
        if self._formatter is None:
            # No chat template in the file: a plain transcript the model can continue.
            lines = [f"{m['role']}: {m['content']}" for m in messages]
            return "\n".join(lines) + "\nassistant:"
        try:
            prompt = self._formatter(messages=messages).prompt
        except ValueError as exc:  # the template's raise_exception: e.g. roles out of order
            raise InvalidRequest(
                f"The messages do not fit this model's chat template: {exc}", param="messages"
            ) from None
        bos = self._token_text(self._llm.token_bos())
        if self._add_bos and bos and prompt.startswith(bos):
            prompt = prompt[len(bos) :]  # tokenize() adds it; do not send it twice
        return prompt

    def tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode(), add_bos=self._add_bos, special=True)

    def detokenize(self, tokens: Sequence[int]) -> str:
        pieces = b"".join(self._piece(t) for t in tokens if t != self._llm.token_bos())
        return pieces.decode(errors="replace")

    def generate(self, prompt: Sequence[int], sampling: Sampling) -> Iterator[bytes]:
        with self._lock:
            self._evaluate_prompt(prompt)
            sampler = self._sampler(sampling)
            is_eog = self._llama_cpp.llama_vocab_is_eog
            try:
                while self._llm.n_tokens < self.context_length:
                    token = sampler.sample(self._llm._ctx, -1)  # samples and accepts
                    if not is_eog(self._vocab, token):
                        yield self._piece(token)
                    elif not sampling.ignore_eos:
                        return
                    self._llm.eval([token])
            finally:
                sampler.close()

    def _sampler(self, sampling: Sampling) -> Any:
        """A llama.cpp sampler chain: logit bias, penalties, then greedy or top-k/p/min-p."""
        from llama_cpp._internals import LlamaSampler

        n_vocab = self.vocab_size
        sampler = LlamaSampler()
        if sampling.logit_bias:
            # OpenAI's -100 means "never": a large finite bias is not always enough.
            bias = {t: (-math.inf if b <= -100 else b) for t, b in sampling.logit_bias}
            sampler.add_logit_bias(n_vocab, bias)
        sampler.add_penalties(
            n_vocab,
            penalty_last_n=PENALTY_WINDOW,
            penalty_repeat=sampling.repeat_penalty,
            penalty_freq=sampling.frequency_penalty,
            penalty_present=sampling.presence_penalty,
        )
        if sampling.temperature == 0:
            sampler.add_greedy()
            return sampler
        seed = RANDOM_SEED if sampling.seed is None else sampling.seed & 0xFFFFFFFF
        sampler.add_top_k(sampling.top_k)
        sampler.add_top_p(sampling.top_p, 1)
        sampler.add_min_p(sampling.min_p, 1)
        sampler.add_temp(sampling.temperature)
        sampler.add_dist(seed)
        return sampler

    def _evaluate_prompt(self, prompt: Sequence[int]) -> None:
        """Evaluate the prompt in its fixed blocks, reusing those already in the KV cache."""
        blocks = prompt_blocks(len(prompt))
        reused = reusable_blocks(self._cached_tokens, self._cached_blocks, prompt)
        keep = blocks[reused - 1][1] if reused else 0
        if not self._llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            keep, reused = 0, 0
            self._llm.reset()
        self._llm.n_tokens = keep
        # Until the evaluation succeeds, nothing beyond `keep` may be trusted.
        self._cached_tokens, self._cached_blocks = list(prompt[:keep]), blocks[:reused]
        for start, end in blocks[reused:]:
            self._llm.eval(prompt[start:end])
        self._cached_tokens, self._cached_blocks = list(prompt), blocks

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buffer = (ctypes.c_char * _PIECE_BUFFER)()
            size = self._llama_cpp.llama_token_to_piece(
                self._vocab, token, buffer, _PIECE_BUFFER, 0, False
            )
            piece = bytes(buffer[: max(size, 0)])
            self._pieces[token] = piece
        return piece

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        buffer = (ctypes.c_char * _PIECE_BUFFER)()
        size = self._llama_cpp.llama_token_to_piece(
            self._vocab, token, buffer, _PIECE_BUFFER, 0, True
        )
        return bytes(buffer[: max(size, 0)]).decode(errors="replace")
