"""llama.cpp (CPU, GGUF) behind the TextModel interface, through llama-cpp-python."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.errors import EngineUnavailable
from common.registry import ModelConfig
from layers import EngineOptions
from layers.chat_template import ChatTemplate
from layers.logprobs import TokenLogprobs
from layers.prefix_cache import Block, prompt_blocks, reusable_blocks
from layers.text import ChatTurn, GeneratedToken, Sampling, TokenLogprob, ToolSpec

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
    shaping = {k: kwargs[k] for k in sorted(kwargs) if k not in ("verbose", "n_threads_batch")}
    digest.update(f"llama-cpp-python {engine_version} {size} {shaping}".encode())
    return "fp_" + digest.hexdigest()[:12]


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
        import numpy as np

        self.name = config.name
        self._llama_cpp = llama_cpp
        self._np = np
        kwargs = llama_kwargs(config.parameters, options)
        self._llm = llama_cpp.Llama(model_path=str(path), **kwargs)
        self.context_length: int = self._llm.n_ctx()
        self.vocab_size: int = self._llm.n_vocab()
        self.fingerprint = fingerprint(path, kwargs, llama_cpp.__version__)
        self._vocab = self._llm._model.vocab
        self._add_bos: bool = self._llm._model.add_bos_token()
        self._pieces: dict[int, bytes] = {}
        self._cached_tokens: list[int] = []
        self._cached_blocks: list[Block] = []
        self._grammar_tokenizer: Any = None  # llguidance's view of the vocabulary, on first use
        # llama.cpp contexts are not thread-safe: one generation at a time per model.
        self._lock = threading.Lock()

        self._template = ChatTemplate(
            config.templates.get("chat") or self._llm.metadata.get("tokenizer.chat_template"),
            bos_token=self._token_text(self._llm.token_bos()),
            eos_token=self._token_text(self._llm.token_eos()),
            add_bos=self._add_bos,
        )

    def close(self) -> None:
        with self._lock:  # never under a running generation
            self._llm.close()

    def chat_prompt(self, turns: Sequence[ChatTurn], tools: Sequence[ToolSpec] = ()) -> list[int]:
        tokens = [self._llm.token_bos()] if self._add_bos else []
        for piece in self._template.render(turns, tools):
            # Special tokens are parsed in the template's text only, never in a client's.
            tokens += self._llm.tokenize(
                piece.text.encode(), add_bos=False, special=not piece.from_client
            )
        return tokens

    @functools.cached_property
    def max_token_bytes(self) -> int:
        return max(len(self._to_piece(t, special=True)) for t in range(self.vocab_size))

    def tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode(), add_bos=self._add_bos, special=True)

    def detokenize(self, tokens: Sequence[int]) -> str:
        pieces = b"".join(self._piece(t) for t in tokens if t != self._llm.token_bos())
        return pieces.decode(errors="replace")

    def infill_prompt(self, prefix: str, suffix: str) -> list[int] | None:
        lib, vocab = self._llama_cpp, self._vocab
        pre, suf, mid = (
            lib.llama_vocab_fim_pre(vocab),
            lib.llama_vocab_fim_suf(vocab),
            lib.llama_vocab_fim_mid(vocab),
        )
        if min(pre, suf, mid) < 0:
            return None
        bos = [self._llm.token_bos()] if self._add_bos else []
        text = self._llm.tokenize
        return (
            bos
            + [pre]
            + text(prefix.encode(), add_bos=False, special=False)
            + [suf]
            + text(suffix.encode(), add_bos=False, special=False)
            + [mid]
        )

    def generate(
        self,
        prompt: Sequence[int],
        sampling: Sampling,
        grammar: str | None = None,
        logprobs: int | None = None,
    ) -> Iterator[GeneratedToken]:
        with self._lock:
            mask = self._token_mask(grammar) if grammar else None
            self._evaluate_prompt(prompt)
            sampler = self._sampler(sampling)
            is_eog = self._llama_cpp.llama_vocab_is_eog
            scorer = TokenLogprobs(self._piece) if logprobs is not None else None
            try:
                while self._llm.n_tokens < self.context_length:
                    logits = self._logits() if mask or scorer else None
                    if mask:
                        mask.apply(logits)
                    token = sampler.sample(self._llm._ctx, -1)  # samples and accepts
                    if mask and not mask.accept(token):
                        return  # nothing the grammar allows could be sampled (logit_bias)
                    if not is_eog(self._vocab, token):
                        scored = scorer.score(logits, token, logprobs) if scorer else None
                        yield GeneratedToken(self._piece(token), scored)
                    elif not sampling.ignore_eos or mask:
                        return
                    if mask and mask.complete:
                        return
                    forced = mask.forced() if mask and scorer is None else []
                    room = self.context_length - self._llm.n_tokens - 1
                    for next_token in forced[:room]:
                        # The grammar allows nothing else: no need to ask the model (jump-forward
                        # decoding); they are evaluated in one batch with the sampled token.
                        sampler.accept(next_token)
                        yield GeneratedToken(self._piece(next_token))
                    self._llm.eval([token, *forced[:room]])
                    if mask and mask.complete:
                        return
            finally:
                sampler.close()

    def prompt_logprobs(self, prompt: Sequence[int], top: int) -> list[TokenLogprob | None]:
        scorer = TokenLogprobs(self._piece)
        scored: list[TokenLogprob | None] = [None]

        def score(position: int, logits: Any) -> None:
            if position + 1 < len(prompt):
                scored.append(scorer.score(logits, prompt[position + 1], top))

        with self._lock:
            self._evaluate_prompt(prompt, on_logits=score)
        return scored

    def _logits(self) -> Any:
        """The last position's logits, as a writable numpy view of llama.cpp's own buffer."""
        pointer = self._llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        return self._np.ctypeslib.as_array(pointer, shape=(self.vocab_size,))

    def _token_mask(self, grammar: str) -> Any:
        from layers.structured import TokenMask

        if self._grammar_tokenizer is None:
            self._grammar_tokenizer = self._llguidance_tokenizer()
        return TokenMask(self._grammar_tokenizer, grammar, self.vocab_size)

    def _llguidance_tokenizer(self) -> Any:
        """llguidance's view of this vocabulary (about a second for 50k tokens: built on the
        first constrained request, then kept with the model).

        As llguidance.llamacpp builds it, with llama.cpp's current attribute call: control
        tokens are marked with a leading 0xFF so that text can never spell them.
        """
        from llguidance import LLTokenizer

        lib, vocab = self._llama_cpp, self._vocab
        special = lib.LLAMA_TOKEN_ATTR_CONTROL
        user = lib.LLAMA_TOKEN_ATTR_USER_DEFINED
        pieces, ends = [], []
        for token in range(self.vocab_size):
            piece = self._token_bytes(token)
            attributes = lib.llama_vocab_get_attr(vocab, token)
            if attributes & special or (
                attributes & user and piece.startswith(b"<") and piece.endswith(b">")
            ):
                piece = b"\xff" + piece
            pieces.append(piece)
            if lib.llama_vocab_is_eog(vocab, token):
                ends.append(token)
        tokenize = ctypes.cast(lib.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
        return LLTokenizer.from_llamacpp(
            tokens=pieces, vocab_ptr=vocab, tokenize_fptr=tokenize, eos_token=ends, slices=None
        )

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

    def _evaluate_prompt(
        self,
        prompt: Sequence[int],
        on_logits: Callable[[int, Any], None] | None = None,
    ) -> None:
        """Evaluate the prompt in its fixed blocks, reusing those already in the KV cache.

        `on_logits(position, logits)` sees every position's logits as it is evaluated (the
        prompt's log probabilities), so no block is reused then, and none are kept.
        """
        blocks = prompt_blocks(len(prompt))
        reused = (
            0 if on_logits else reusable_blocks(self._cached_tokens, self._cached_blocks, prompt)
        )
        keep = blocks[reused - 1][1] if reused else 0
        if not self._llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            keep, reused = 0, 0
            self._llm.reset()
        self._llm.n_tokens = keep
        # Until the evaluation succeeds, nothing beyond `keep` may be trusted.
        self._cached_tokens, self._cached_blocks = list(prompt[:keep]), blocks[:reused]
        for start, end in blocks[reused:]:
            if on_logits:
                self._eval_scoring(prompt[start:end], on_logits)
            else:
                self._llm.eval(prompt[start:end])
        self._cached_tokens, self._cached_blocks = list(prompt), blocks

    def _eval_scoring(self, tokens: Sequence[int], on_logits: Callable[[int, Any], None]) -> None:
        """Llama.eval, with logits for every position, each handed on before the next batch
        overwrites them (llama-cpp-python's logits_all would keep n_ctx x n_vocab floats)."""
        llm = self._llm
        for i in range(0, len(tokens), llm.n_batch):
            batch = tokens[i : i + llm.n_batch]
            n_past = llm.n_tokens
            llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past : n_past + len(batch)] = batch
            llm.n_tokens += len(batch)
            for j in range(len(batch)):
                pointer = self._llama_cpp.llama_get_logits_ith(llm._ctx.ctx, j)
                on_logits(
                    n_past + j, self._np.ctypeslib.as_array(pointer, shape=(self.vocab_size,))
                )

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._to_piece(token, special=False)
        return piece

    def _token_text(self, token: int) -> str:
        return self._token_bytes(token).decode(errors="replace") if token >= 0 else ""

    def _token_bytes(self, token: int) -> bytes:
        """A token's text with special tokens spelled out (`<|im_end|>`), unlike _piece."""
        return self._to_piece(token, special=True)

    def _to_piece(self, token: int, special: bool) -> bytes:
        size = _PIECE_BUFFER
        while True:
            buffer = (ctypes.c_char * size)()
            written = self._llama_cpp.llama_token_to_piece(
                self._vocab, token, buffer, size, 0, special
            )
            if written >= 0:
                return bytes(buffer[:written])
            size = -written  # too small: llama.cpp says how much it needs
