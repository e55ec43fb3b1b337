"""How a model thinks before it answers, found in its chat template: the markers of its
reasoning block, a streaming splitter of reasoning from content, and the grammar that lets a
constrained answer (tools, JSON) start only after the block.

Detection is a table of template signatures, specific before generic (as llama.cpp's
common/chat.cpp keeps one), so handlers never test for a model family. A template may open
the block in the prompt itself (DeepSeek R1's ends its generation prompt with `<think>\\n`):
then everything the model writes up to the end marker is reasoning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from layers.structured import lark_string, regex_escape


@dataclass(frozen=True)
class ReasoningFormat:
    name: str
    start: str
    end: str


THINK = ReasoningFormat("think", "<think>", "</think>")  # DeepSeek R1, Qwen3, QwQ, SmolLM3...
MAGISTRAL = ReasoningFormat("magistral", "[THINK]", "[/THINK]")  # Mistral's reasoning models
COMMAND_R7B = ReasoningFormat("command-r7b", "<|START_THINKING|>", "<|END_THINKING|>")

# (what the template contains, its format): the first that matches wins.
SIGNATURES: tuple[tuple[str, ReasoningFormat], ...] = (
    ("[THINK]", MAGISTRAL),
    ("<|START_THINKING|>", COMMAND_R7B),
    ("</think>", THINK),
)
FORMATS = {fmt.name: fmt for _, fmt in SIGNATURES}


def detect(template: str | None) -> ReasoningFormat | None:
    """The reasoning format a chat template writes or reads, if any."""
    if not template:
        return None
    return next((fmt for signature, fmt in SIGNATURES if signature in template), None)


class ReasoningSplitter:
    """Generated text, as it streams, split into reasoning and content.

    Outside the block (unless the prompt opened it), leading whitespace and then the start
    marker open it; the end marker closes it for good, and the whitespace after it is the
    template's, not the answer's. Text that may still become a marker is held back.
    """

    def __init__(self, fmt: ReasoningFormat, opened: bool) -> None:
        self._fmt = fmt
        self._state = "reasoning" if opened else "before"
        self._held = ""
        self._fresh = True  # at the block's start: its leading newlines are the template's

    def feed(self, text: str) -> list[tuple[str, str]]:
        """(kind, text) pieces: kind is "reasoning" or "content"."""
        self._held += text
        out: list[tuple[str, str]] = []
        while self._held:
            if self._state == "before":
                stripped = self._held.lstrip()
                if stripped.startswith(self._fmt.start):
                    self._held = stripped[len(self._fmt.start) :]
                    self._state = "reasoning"
                elif self._fmt.start.startswith(stripped):
                    break  # may still become the start marker
                else:
                    self._state = "content"
            elif self._state == "reasoning":
                if self._fresh:
                    self._held = self._held.lstrip("\n")
                    self._fresh = not self._held
                    if not self._held:
                        break
                at = self._held.find(self._fmt.end)
                if at >= 0:
                    if at:
                        out.append(("reasoning", self._held[:at]))
                    self._held = self._held[at + len(self._fmt.end) :]
                    self._state = "after"
                    continue
                keep = _partial_suffix(self._held, self._fmt.end)
                if len(self._held) > keep:
                    out.append(("reasoning", self._held[: len(self._held) - keep]))
                self._held = self._held[len(self._held) - keep :]
                break
            elif self._state == "after":
                self._held = self._held.lstrip()
                if self._held:
                    self._state = "content"
            else:
                out.append(("content", self._held))
                self._held = ""
        return out

    def finish(self) -> list[tuple[str, str]]:
        """The end of the generation: what was held back is what it was."""
        held, self._held = self._held, ""
        if not held or self._state == "after":
            return []
        return [("reasoning" if self._state == "reasoning" else "content", held)]


# The answer after the block when nothing else constrains it: any text.
FREE_TEXT = "start: /(.|\\n)*/\n"


def grammar(
    answer: str | None,
    fmt: ReasoningFormat,
    opened: bool,
    budget: int | None = None,
    literal: Callable[[str], str] = lark_string,
) -> str:
    """`answer` (a Lark grammar with a `start` rule; None: free text) after a reasoning block:
    text without the end marker, then the marker (forced after `budget` tokens); the block is
    optional unless the prompt opened it. `literal` writes a marker as the model's special
    token where its vocabulary has one (layers/tool_formats/base.Literal)."""
    body = (answer or FREE_TEXT).replace("start:", "answer:", 1)
    block = f"reasoning {literal(fmt.end)} GAP"
    start = (
        f"start: {block} answer"
        if opened
        else (f"start: {literal(fmt.start)} {block} answer | answer")
    )
    escaped = regex_escape(fmt.end)
    bounded = f"[max_tokens={budget}]" if budget is not None else ""
    return (
        f"{start}\n"
        f"reasoning{bounded}: REASONING\n"
        f"REASONING: /(.|\\n)*/ & ~/(.|\\n)*{escaped}(.|\\n)*/\n"
        "GAP: /[ \\t\\n]*/\n"
        f"{body}"
    )


def _partial_suffix(text: str, marker: str) -> int:
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
