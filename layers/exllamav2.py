"""exllamav2 (CUDA: EXL2-quantized or FP16/BF16 safetensors directories) behind the TextModel
interface.

One dynamic generator per model: every request's sequences are jobs of it, batched by the
library (continuous batching; paged attention where flash-attn is installed, else one
contiguous cache of `parallel` sequences, as the library allows without it). One thread drives
the generator. A closed token stream cancels its job, which frees its cache pages.
Sampling comes from layers/exllamav2_jobs.py, grammars from the same llguidance masks as
llama.cpp, and the chat template from the model's own tokenizer_config.json, rendered like
llama.cpp's.

Written against exllamav2 0.3.2's API and not yet run: this project's machines have no GPU.
tests/gpu/ runs it where one is (marked `gpu`, skipped visibly elsewhere).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from common.errors import EngineUnavailable
from common.registry import ModelConfig
from common.turns import ChatTurn, TokenLogprob, ToolSpec
from layers import EngineOptions
from layers.chat_template import ChatTemplate
from layers.exllamav2_jobs import finish_reason, sampler_fields, stop_conditions, token_bias
from layers.structured import lark_string
from layers.text import GeneratedToken, Sampling

log = logging.getLogger("stratus.exllamav2")
_END = object()  # a job's queue: its last result was delivered


def load(config: ModelConfig, path: Path, options: EngineOptions) -> ExLlamaV2TextModel:
    return ExLlamaV2TextModel(config, path)


class GeneratorLoop:
    """The one thread that drives a dynamic generator: it enqueues new jobs, iterates while any
    run, and hands each result to its job's queue; it cancels the jobs whose streams closed."""

    def __init__(self, generator: Any) -> None:
        self._generator = generator
        self._lock = threading.Condition()
        self._new: list[tuple[Any, queue.SimpleQueue]] = []
        self._cancelled: list[Any] = []
        self._queues: dict[int, queue.SimpleQueue] = {}
        threading.Thread(target=self._run, name="exllamav2", daemon=True).start()

    def submit(self, job: Any) -> queue.SimpleQueue:
        results: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            self._new.append((job, results))
            self._lock.notify()
        return results

    def cancel(self, job: Any) -> None:
        with self._lock:
            self._cancelled.append(job)
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._new or self._cancelled or self._queues):
                    self._lock.wait()
                new, self._new = self._new, []
                cancelled, self._cancelled = self._cancelled, []
            for job, results in new:
                self._generator.enqueue(job)
                self._queues[id(job)] = results
            for job in cancelled:
                if self._queues.pop(id(job), None) is not None:
                    self._generator.cancel(job)
            if not self._queues:
                continue
            try:
                for result in self._generator.iterate():
                    results = self._queues.get(id(result["job"]))
                    if results is None:
                        continue
                    results.put(result)
                    if result.get("eos"):
                        del self._queues[id(result["job"])]
                        results.put(_END)
            except Exception as error:  # the step's jobs fail; the loop goes on with new ones
                log.exception("exllamav2 generation step failed")
                for job_id, results in list(self._queues.items()):
                    results.put(error)
                    del self._queues[job_id]


class ExLlamaV2TextModel:
    def __init__(self, config: ModelConfig, path: Path) -> None:
        import torch
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
        from exllamav2.attn import has_flash_attn_with_paged
        from exllamav2.generator import ExLlamaV2DynamicGenerator

        if not torch.cuda.is_available():
            raise EngineUnavailable(f"The model '{config.name}' (exllamav2) needs a CUDA GPU.")
        self._torch = torch
        self.name = config.name
        parallel = config.parallel
        settings = ExLlamaV2Config(str(path))
        context = int(config.parameters.get("n_ctx", settings.max_seq_len))
        settings.max_seq_len = min(context, settings.max_seq_len)
        self.context_length = settings.max_seq_len
        self._model = ExLlamaV2(settings)
        paged = has_flash_attn_with_paged  # flash-attn 2.5.7 or later
        if not paged:
            log.warning(
                "model %s: flash-attn is not installed, so exllamav2 cannot page its cache: "
                "%d sequences of %d tokens are allocated up front",
                config.name, parallel, self.context_length,
            )  # fmt: skip
        cache = ExLlamaV2Cache(
            self._model,
            max_seq_len=self.context_length * (parallel if paged else 1),
            batch_size=1 if paged else parallel,
            lazy=True,
        )
        self._model.load_autosplit(cache)
        self._tokenizer = ExLlamaV2Tokenizer(settings)
        self._generator = ExLlamaV2DynamicGenerator(
            model=self._model,
            cache=cache,
            tokenizer=self._tokenizer,
            max_batch_size=parallel,
            paged=paged,
        )
        self._loop = GeneratorLoop(self._generator)
        self.vocab_size = settings.vocab_size
        template, add_bos = _template(path)
        self._add_bos = add_bos
        self._template = ChatTemplate(
            template,
            bos_token=self._tokenizer.bos_token or "",
            eos_token=self._tokenizer.eos_token or "",
            add_bos=add_bos,
            reasoning_format=config.reasoning_format,
            tool_format=config.tool_format,
            model=config.name,
        )
        self.reasoning = self._template.reasoning
        self.reasoning_opens = self._template.reasoning_opens
        self.tool_format = self._template.tool_format
        self._end_tokens = {self._tokenizer.eos_token_id, *_end_of_turn(self._tokenizer)}
        self._pieces = self._tokenizer.get_id_to_piece_list(True)
        files = sorted(p.name for p in path.iterdir())
        digest = hashlib.sha256(json.dumps([config.name, files, parallel]).encode())
        self.fingerprint = "fp_" + digest.hexdigest()[:12]

    @functools.cached_property
    def max_token_bytes(self) -> int:
        return max((len(piece.encode()) for piece in self._pieces), default=1)

    def chat_prompt(
        self,
        turns: Sequence[ChatTurn],
        tools: Sequence[ToolSpec] = (),
        thinking: bool = True,
        effort: str | None = None,
    ) -> list[int]:
        tokens = [self._tokenizer.bos_token_id] if self._add_bos else []
        for piece in self._template.render(turns, tools, thinking, effort):
            # Special tokens are parsed in the template's text only, never in a client's.
            tokens += self._encode(piece.text, special=not piece.from_client)
        return tokens

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        prefix = [self._tokenizer.bos_token_id] if self._add_bos and add_special else []
        return prefix + self._encode(text, special=parse_special)

    def token_bytes(self, token: int) -> bytes:
        return self._piece(token)

    def detokenize(self, tokens: Sequence[int]) -> str:
        ids = [t for t in tokens if t != self._tokenizer.bos_token_id]
        if not ids:
            return ""
        # The tokenizer decodes a batch: shape (1, n) in, one text out.
        [text] = self._tokenizer.decode(self._torch.tensor([ids]), decode_special_tokens=True)
        return text

    def infill_prompt(self, prefix: str, suffix: str) -> list[int] | None:
        return None  # no fill-in-the-middle tokens are read from exllamav2's tokenizer yet

    def generate(
        self,
        prompt: Sequence[int],
        sampling: Sampling,
        grammar: str | None = None,
        logprobs: int | None = None,
        limit: int | None = None,
    ) -> Iterator[GeneratedToken]:
        from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

        settings = ExLlamaV2Sampler.Settings(**sampler_fields(sampling))
        bias = token_bias(sampling.logit_bias, self.vocab_size)
        if bias is not None:
            settings.token_bias = self._torch.tensor(bias, dtype=self._torch.float)
        job = ExLlamaV2DynamicJob(
            input_ids=self._torch.tensor([list(prompt)], dtype=self._torch.long),
            max_new_tokens=limit or (self.context_length - len(prompt)),
            gen_settings=settings,
            seed=sampling.seed,
            stop_conditions=stop_conditions(self._end_tokens, sampling.ignore_eos),
            return_top_tokens=logprobs or 0,
            return_probs=logprobs is not None,
            filters=[self._grammar_filter(grammar, limit)] if grammar else None,
        )
        return self._stream(job, self._loop.submit(job), logprobs)

    def _stream(
        self, job: Any, results: queue.SimpleQueue, logprobs: int | None
    ) -> Iterator[GeneratedToken]:
        """One GeneratedToken per generated token. The first of a result carries its text (the
        library decodes multi-byte characters across tokens); a stop token is not emitted."""
        try:
            while (result := results.get()) is not _END:
                if isinstance(result, Exception):
                    raise EngineUnavailable(f"The model '{self.name}' failed to generate.")
                ids = result.get("token_ids")
                count = 0 if ids is None else int(ids.shape[-1])
                text = result.get("text", "").encode()
                for index in range(count):
                    scored = self._logprob(result, index) if logprobs is not None else None
                    yield GeneratedToken(text if index == 0 else b"", scored)
                if count == 0 and text:  # held text released at the end
                    yield GeneratedToken(text)
                if finish_reason(result) is not None:
                    return
        finally:
            self._loop.cancel(job)  # a no-op for a finished job

    def _logprob(self, result: dict, index: int) -> TokenLogprob:
        """From the sampler's own probabilities (exllamav2 returns them, not raw logits)."""
        token = int(result["token_ids"][0, index])
        probability = float(result["token_probs"][0, index])
        top: tuple[tuple[bytes, float], ...] = ()
        if "top_k_tokens" in result:
            top = tuple(
                (self._piece(int(t)), math.log(max(float(p), 1e-45)))
                for t, p in zip(
                    result["top_k_tokens"][0, index], result["top_k_probs"][0, index], strict=True
                )
            )
        return TokenLogprob(self._piece(token), math.log(max(probability, 1e-45)), top)

    def prompt_logprobs(self, prompt: Sequence[int], top: int) -> list[TokenLogprob | None]:
        from layers.logprobs import TokenLogprobs

        ids = self._torch.tensor([list(prompt)], dtype=self._torch.long)
        logits = self._model.forward(ids).float().cpu().numpy()[0]
        scorer = TokenLogprobs(self._piece)
        return [None] + [scorer.score(logits[i - 1], prompt[i], top) for i in range(1, len(prompt))]

    def grammar_literal(self, text: str) -> str:
        # Added tokens (the special ones and the model's own markers) by their id: the
        # pieces list shows their text, so the parser sees them when generated.
        token = self._tokenizer.extended_piece_to_id.get(text)
        return lark_string(text) if token is None else f"<[{token}]>"

    def _encode(self, text: str, special: bool) -> list[int]:
        ids = self._tokenizer.encode(text, add_bos=False, encode_special_tokens=special)
        return [int(t) for t in ids[0]]

    def _piece(self, token: int) -> bytes:
        return self._pieces[token].encode() if 0 <= token < len(self._pieces) else b""

    def fewest_tokens(self, grammar: str) -> int | None:
        from layers.exllamav2_filter import token_mask

        return token_mask(self._model, grammar, self.vocab_size).fewest_to_end()

    def _grammar_filter(self, grammar: str, limit: int | None) -> Any:
        from layers.exllamav2_filter import grammar_filter

        return grammar_filter(self._model, self._tokenizer, grammar, self.vocab_size, limit)


def _template(path: Path) -> tuple[str | None, bool]:
    """The chat template and whether prompts start with BOS, from tokenizer_config.json."""
    config_file = path / "tokenizer_config.json"
    if not config_file.is_file():
        return None, True
    tokenizer_config = json.loads(config_file.read_text())
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template, bool(tokenizer_config.get("add_bos_token", True))


def _end_of_turn(tokenizer: Any) -> set[int]:
    """Chat templates' end-of-turn tokens the model may emit instead of EOS."""
    ids = set()
    for name in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        token = tokenizer.single_id(name) if name in tokenizer.extended_piece_to_id else None
        if token is not None:
            ids.add(token)
    return ids
