"""llama.cpp (CPU, GGUF) behind the TextModel interface, through llama-cpp-python."""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from common.errors import InvalidRequest
from common.registry import ModelConfig
from common.turns import IMAGE_MARKER, ChatTurn, Picture, TokenLogprob, ToolSpec
from layers import EngineOptions
from layers.chat_template import ChatTemplate
from layers.llama_batch import BatchScheduler
from layers.llama_context import GrowingContext
from layers.llama_files import (
    MODEL_PARAMETERS,
    draft_settings,
    fingerprint,
    gguf_file,
    llama_kwargs,
    projector_file,
)
from layers.llama_sequences import Job
from layers.logprobs import TokenLogprobs
from layers.media_prompt import Prompt
from layers.ngram_draft import NgramDrafter
from layers.speculation import Speculation
from layers.structured import lark_string
from layers.text import GeneratedToken, Sampling

RANDOM_SEED = 0xFFFFFFFF  # llama.cpp draws a fresh seed for this value
PENALTY_WINDOW = 64  # tokens the repetition penalties look back over (llama.cpp's default)


def load(config: ModelConfig, path: Path, options: EngineOptions) -> Any:
    if config.parameters.get("embedding"):
        from layers import llama_cpp_embeddings

        return llama_cpp_embeddings.load(config, gguf_file(config, path), options)
    return LlamaCppTextModel(config, gguf_file(config, path), options)


class LlamaCppTextModel:
    """A GGUF model generating for many requests at once (layers/llama_batch)."""

    def __init__(self, config: ModelConfig, path: Path, options: EngineOptions) -> None:
        from layers.llama_api import ModelFile, bindings, invariant_products, version

        llama_cpp = bindings()
        # llama.cpp's log, once llama-cpp-python's package is imported (the vision projector
        # imports it) and routes it to this logger: errors only, as Llama(verbose=False) has it.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self.name = config.name
        self._llama_cpp = llama_cpp
        kwargs = llama_kwargs(config.parameters, options)
        self._drafts = draft_settings(kwargs)
        self.parallel = config.parallel  # sequences at once, each with all of n_ctx
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        for key in MODEL_PARAMETERS:
            if key in kwargs:
                setattr(model_params, key, kwargs[key])
        if kwargs["batch_invariant"]:
            invariant_products(model_params)
        self._model = ModelFile(llama_cpp, path, model_params)
        context = GrowingContext(llama_cpp, self._model.model, kwargs, self.parallel, self.name)
        self.context_length: int = context.context_length
        self.vocab_size: int = self._model.n_vocab()
        self.fingerprint = fingerprint(path, kwargs, version())
        self._vision = None
        if config.mmproj is not None:
            from layers.llama_vision import Projector

            projector = projector_file(config, path)
            self._vision = Projector(
                projector,
                self._model.model,
                kwargs.get("mmproj_threads", kwargs["n_threads_batch"]),
                context.n_batch,
            )
            # Its weights shape the answers to images as the model's shape all answers.
            self.fingerprint = fingerprint(projector, {"model": self.fingerprint}, "mtmd")
        self.accepts_images = self._vision is not None
        self._vocab = self._model.vocab
        self._add_bos: bool = self._model.add_bos_token()
        self._pieces: dict[int, bytes] = {}
        self._grammar_tokenizer: Any = None  # llguidance's view of the vocabulary, on first use
        self._grammar_endings: Any = None  # its tokens that close a structure (layers/closing)
        self._grammar_lock = threading.Lock()
        self._scheduler = BatchScheduler(
            llama_cpp,
            context,
            self.vocab_size,
            self._piece,
            lambda token: llama_cpp.llama_vocab_is_eog(self._vocab, token),
            self._vision.evaluate if self._vision is not None else None,
            # Measured on the CPU backend with flash attention only (layers/prefix_cache).
            exact_tail=kwargs["token_prefix_reuse"] is True
            and kwargs["flash_attn"] is not False
            and not llama_cpp.llama_supports_gpu_offload(),
        )
        self._template = ChatTemplate(
            config.templates.get("chat") or self._model.metadata().get("tokenizer.chat_template"),
            bos_token=self._token_text(self._model.token_bos()),
            eos_token=self._token_text(self._model.token_eos()),
            add_bos=self._add_bos,
            reasoning_format=config.reasoning_format,
            tool_format=config.tool_format,
            model=config.name,
        )
        self.reasoning = self._template.reasoning
        self.reasoning_opens = self._template.reasoning_opens
        self.tool_format = self._template.tool_format
        self._marker_tokens = self._special_markers()
        for text, token in self._marker_tokens.items():
            self._pieces[token] = text.encode()  # generated, they show: the parser needs them

    def _special_markers(self) -> dict[str, int]:
        """The markers of the model's formats that its vocabulary has as one special token
        (control, or added by the model's authors): text -> token."""
        lib = self._llama_cpp
        special = lib.LLAMA_TOKEN_ATTR_CONTROL | lib.LLAMA_TOKEN_ATTR_USER_DEFINED
        texts = list(self.tool_format.markers)
        if self.reasoning is not None:
            texts += [self.reasoning.start, self.reasoning.end]
        found = {}
        for text in texts:
            tokens = self._model.tokenize(text.encode(), add_bos=False, special=True)
            if len(tokens) == 1 and lib.llama_vocab_get_attr(self._vocab, tokens[0]) & special:
                found[text] = tokens[0]
        return found

    def grammar_literal(self, text: str) -> str:
        token = self._marker_tokens.get(text)
        return lark_string(text) if token is None else f"<[{token}]>"

    def close(self) -> None:
        self._scheduler.close()  # stops the running sequences first, then frees the context
        if self._vision is not None:
            self._vision.close()
        self._model.close()

    def chat_prompt(
        self,
        turns: Sequence[ChatTurn],
        tools: Sequence[ToolSpec] = (),
        thinking: bool = True,
        effort: str | None = None,
    ) -> list[int]:
        tokens = [self._model.token_bos()] if self._add_bos else []
        pieces = self._template.render(turns, tools, thinking, effort)
        pictures = [image for turn in turns for image in turn.images]
        if pictures:
            return self._prompt_with_images(pieces, pictures, tokens)
        for piece in pieces:
            # Special tokens are parsed in the template's text only, never in a client's.
            tokens += self._model.tokenize(
                piece.text.encode(), add_bos=False, special=not piece.from_client
            )
        return tokens

    def _prompt_with_images(
        self, pieces: Sequence[Any], pictures: Sequence[Any], first: list[int]
    ) -> Prompt:
        """The rendered conversation with each image where its marker is, in order."""
        from layers.llama_vision import Part

        if self._vision is None:  # handlers refuse them first, from the registry entry
            raise InvalidRequest(
                f"The model '{self.name}' does not read images.",
                param=pictures[0].param,
                code="images_not_supported",
            )
        images = iter(pictures)
        parts: list[Part] = []
        placed = 0
        for piece in pieces:
            for k, text in enumerate(piece.text.split(IMAGE_MARKER)):
                if k:
                    image = next(images, None)
                    assert isinstance(image, Picture), "images are read before the prompt"
                    parts.append(Part(image=image))
                    placed += 1
                if text:
                    parts.append(Part(text, special=not piece.from_client))
        if placed != len(pictures):
            raise InvalidRequest(
                f"The chat template of '{self.name}' placed {placed} of the conversation's "
                f"{len(pictures)} images (images are read in user messages).",
                param="messages",
            )
        return self._vision.prompt(parts, first)

    @functools.cached_property
    def max_token_bytes(self) -> int:
        return max(len(self._model.piece(t, special=True)) for t in range(self.vocab_size))

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        add_bos = self._add_bos and add_special
        return self._model.tokenize(text.encode(), add_bos=add_bos, special=parse_special)

    def token_bytes(self, token: int) -> bytes:
        return self._token_bytes(token)

    def detokenize(self, tokens: Sequence[int]) -> str:
        pieces = b"".join(self._piece(t) for t in tokens if t != self._model.token_bos())
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
        bos = [self._model.token_bos()] if self._add_bos else []
        text = self._model.tokenize
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
        limit: int | None = None,
    ) -> Iterator[GeneratedToken]:
        """Starts at once: the sequence is queued for the engine before the first token is
        asked for (the n choices of a request run side by side)."""
        job_prompt = prompt if isinstance(prompt, Prompt) else list(prompt)
        job = Job(
            prompt=job_prompt,
            sampler=self._sampler(sampling),
            mask=self._token_mask(grammar) if grammar else None,
            scorer=TokenLogprobs(self._piece) if logprobs is not None else None,
            top=logprobs,
            ignore_eos=sampling.ignore_eos,
            limit=limit,
            speculation=Speculation(self._drafts, NgramDrafter(job_prompt))
            if self._drafts.mode == "ngram"
            else None,
        )
        return self._scheduler.tokens(job)

    def prompt_logprobs(self, prompt: Sequence[int], top: int) -> list[TokenLogprob | None]:
        scorer = TokenLogprobs(self._piece)
        scored: list[TokenLogprob | None] = [None]

        def score(position: int, logits: Any) -> None:
            if position + 1 < len(prompt):
                scored.append(scorer.score(logits, prompt[position + 1], top))

        job = Job(prompt=list(prompt), sampler=self._sampler(Sampling()), on_prompt_logits=score)
        self._scheduler.run(job)
        return scored

    def fewest_tokens(self, grammar: str) -> int | None:
        return self._token_mask(grammar).fewest_to_end()

    def _token_mask(self, grammar: str) -> Any:
        from layers.closing import Endings
        from layers.structured import TokenMask

        with self._grammar_lock:  # requests arrive on several threads
            if self._grammar_tokenizer is None:
                self._grammar_tokenizer = self._llguidance_tokenizer()
                self._grammar_endings = Endings.of(self._grammar_tokenizer)
        return TokenMask(self._grammar_tokenizer, grammar, self.vocab_size, self._grammar_endings)

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
        tokenize = ctypes.cast(lib._lib.llama_tokenize, ctypes.c_void_p).value
        return LLTokenizer.from_llamacpp(
            tokens=pieces, vocab_ptr=vocab, tokenize_fptr=tokenize, eos_token=ends, slices=None
        )

    def _sampler(self, sampling: Sampling) -> Any:
        """A llama.cpp sampler chain: logit bias, penalties, then greedy or top-k/p/min-p."""
        from layers.llama_api import SamplerChain

        n_vocab, lib = self.vocab_size, self._llama_cpp
        sampler = SamplerChain(lib)
        if sampling.logit_bias:
            # OpenAI's -100 means "never": a large finite bias is not always enough.
            bias = {t: (-math.inf if b <= -100 else b) for t, b in sampling.logit_bias}
            sampler.add_logit_bias(n_vocab, bias)
        sampler.add(
            lib.llama_sampler_init_penalties(
                n_vocab,
                PENALTY_WINDOW,
                sampling.repeat_penalty,
                sampling.frequency_penalty,
                sampling.presence_penalty,
            )
        )
        if sampling.temperature == 0:
            sampler.add(lib.llama_sampler_init_greedy())
            return sampler
        seed = RANDOM_SEED if sampling.seed is None else sampling.seed & 0xFFFFFFFF
        sampler.add(lib.llama_sampler_init_top_k(sampling.top_k))
        sampler.add(lib.llama_sampler_init_top_p(sampling.top_p, 1))
        sampler.add(lib.llama_sampler_init_min_p(sampling.min_p, 1))
        sampler.add(lib.llama_sampler_init_temp(sampling.temperature))
        sampler.add(lib.llama_sampler_init_dist(seed))
        return sampler

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._model.piece(token, special=False)
        return piece

    def _token_text(self, token: int) -> str:
        return self._token_bytes(token).decode(errors="replace") if token >= 0 else ""

    def _token_bytes(self, token: int) -> bytes:
        """A token's text with special tokens spelled out (`<|im_end|>`), unlike _piece."""
        return self._model.piece(token, special=True)
