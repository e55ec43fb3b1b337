"""One choice generated, as every text endpoint reads it: the engine driven with UTF-8 decoding
across tokens, stop sequences, token budgets, cancellation and finish reasons, and the usage
counted."""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from common import cancellation, metering
from common.protocol.base import Usage
from common.turns import TokenLogprob
from handlers.text.stops import StopMatcher
from layers.text import Sampling, TextModel


@dataclass(frozen=True)
class Piece:
    """Generated text, and the tokens it came from when log probabilities were asked for."""

    text: str
    tokens: tuple[TokenLogprob, ...] = ()


@contextmanager
def started_choices(
    model: TextModel,
    prompt: Sequence[int],
    samplings: Sequence[Sampling],
    budget: int | None,
    stops: Sequence[str],
    grammar: str | None = None,
    logprobs: int | None = None,
) -> Iterator[list[ChoiceStream]]:
    """The choices of one prompt, one per sampling, all started at once: a batching engine runs
    them side by side while the caller reads them in turn (and works while a response's head
    goes out). Every one is closed when the block ends, read to its end or not (the client
    gone, an error)."""
    choices = [
        ChoiceStream(model, prompt, sampling, budget, stops, grammar, logprobs)
        for sampling in samplings
    ]
    try:
        yield choices
    finally:
        for choice in choices:
            choice.close()


class ChoiceStream:
    """One choice being generated: iterate for pieces of text; then read finish_reason.

    The engine starts on it at once; close() stops it when it will not be read to the end.
    """

    def __init__(
        self,
        model: TextModel,
        prompt: Sequence[int],
        sampling: Sampling,
        budget: int | None,
        stops: Sequence[str],
        grammar: str | None = None,
        logprobs: int | None = None,
    ) -> None:
        room = model.context_length - len(prompt)
        self._budget = room if budget is None else min(budget, room)
        self._stops = stops
        self.finish_reason: str | None = None
        self.stop_sequence: str | None = None  # the client's stop sequence that ended it
        self.completion_tokens = 0
        self._record = metering.current()  # each output token counts for the request
        self._tokens = model.generate(
            prompt, sampling, grammar=grammar, logprobs=logprobs, limit=self._budget
        )

    def close(self) -> None:
        self._tokens.close()  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Piece]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        matcher = StopMatcher(self._stops)
        tokens = self._tokens
        record = self._record
        # Tokens whose text is held back (a possible stop sequence) go out with that text.
        scored: list[TokenLogprob] = []
        try:
            finish = "stop"  # the engine ran out: end of sequence (or the grammar's end)
            for token in tokens:
                cancellation.check()  # the client left, or the deadline passed: stop here
                self.completion_tokens += 1
                if record is not None:
                    record.output_token()
                if token.logprob is not None:
                    scored.append(token.logprob)
                text, stopped = matcher.feed(decoder.decode(token.piece))
                if text:
                    yield Piece(text, tuple(scored))
                    scored.clear()
                if stopped:
                    self.finish_reason, self.stop_sequence = "stop", matcher.matched
                    return
                if self.completion_tokens >= self._budget:
                    finish = "length"
                    break
            text, stopped = matcher.feed(decoder.decode(b"", final=True))
            text += "" if stopped else matcher.flush()
            if text:
                yield Piece(text, tuple(scored))
            self.finish_reason = "stop" if stopped else finish
            self.stop_sequence = matcher.matched
        finally:
            tokens.close()  # type: ignore[attr-defined]


@dataclass
class UsageCounter:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )
