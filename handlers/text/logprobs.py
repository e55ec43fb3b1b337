"""Engine log probabilities shaped as OpenAI's chat and legacy completions answers."""

from __future__ import annotations

from collections.abc import Sequence

from common import turns  # the engine's scores; protocol.chat.TokenLogprob is the wire's
from common.protocol.chat import ChoiceLogprobs, TokenLogprob, TopLogprob
from common.protocol.completions import CompletionLogprobs


def token_text(piece: bytes) -> str:
    # A token may hold part of a multi-byte character: its text shows the replacement
    # character, its `bytes` the truth (as OpenAI does).
    return piece.decode(errors="replace")


def chat_logprobs(tokens: Sequence[turns.TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[
            TokenLogprob(
                token=token_text(t.piece),
                logprob=t.logprob,
                bytes=list(t.piece),
                top_logprobs=[
                    TopLogprob(token=token_text(piece), logprob=logprob, bytes=list(piece))
                    for piece, logprob in t.top
                ],
            )
            for t in tokens
        ]
    )


class CompletionLogprobsBuilder:
    """Legacy completions' parallel lists, with each token's offset in the choice's text."""

    def __init__(self, offset: int = 0) -> None:
        self._offset = offset

    def add(
        self, tokens: Sequence[turns.TokenLogprob | None], pieces: Sequence[bytes]
    ) -> CompletionLogprobs:
        out = CompletionLogprobs()
        for scored, piece in zip(tokens, pieces, strict=True):
            token = token_text(piece)
            out.tokens.append(token)
            out.text_offset.append(self._offset)
            self._offset += len(token)
            if scored is None:
                out.token_logprobs.append(None)
                out.top_logprobs.append(None)
            else:
                out.token_logprobs.append(scored.logprob)
                top: dict[str, float] = {}
                for alternative, logprob in scored.top:
                    top.setdefault(token_text(alternative), logprob)
                # OpenAI: the sampled token always, so up to logprobs + 1 entries.
                top.setdefault(token, scored.logprob)
                out.top_logprobs.append(top)
        return out
