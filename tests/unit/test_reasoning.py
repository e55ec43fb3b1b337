"""Reasoning formats without weights: detection from real chat templates (vendored from
llama.cpp's models/templates), whether the prompt opens the block, thinking turned off, the
streaming splitter in every cut of a model's output, and the grammar around a constrained
answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.turns import ChatTurn, ToolSpec
from layers import reasoning, structured
from layers.chat_template import ChatTemplate
from layers.reasoning import MAGISTRAL, THINK, ReasoningSplitter
from layers.tool_formats.json_calls import HERMES

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
TURNS = [ChatTurn("user", "Hi"), ChatTurn("assistant", "Hello", reasoning="I greet."),
         ChatTurn("user", "2+2?")]  # fmt: skip


def template(name: str) -> ChatTemplate:
    return ChatTemplate((TEMPLATES / name).read_text(), "<s>", "</s>", add_bos=False)


@pytest.mark.parametrize(
    ("name", "fmt", "opens"),
    [
        ("deepseek_r1_distill.jinja", THINK, True),
        ("qwen3.jinja", THINK, False),
        ("magistral.jinja", MAGISTRAL, False),
        ("llama31.jinja", None, False),
        ("hermes_tools.jinja", None, False),
    ],
)
def test_detection_from_real_templates(name, fmt, opens):
    chat = template(name)
    assert (chat.reasoning, chat.reasoning_opens) == (fmt, opens)


def test_thinking_off_closes_or_skips_the_block():
    r1 = template("deepseek_r1_distill.jinja")
    assert r1.text(TURNS).endswith("<think>\n")
    assert r1.text(TURNS, thinking=False).rstrip().endswith("</think>")
    qwen3 = template("qwen3.jinja")
    assert qwen3.text(TURNS, thinking=False).endswith("<think>\n\n</think>\n\n")
    assert "<think>" not in qwen3.text(TURNS)


def test_reasoning_sent_back_reaches_a_template_that_reads_it():
    """Qwen3's template writes the last assistant turn's reasoning_content in its block."""
    assert "<think>\nI greet.\n</think>" in template("qwen3.jinja").text(TURNS[:2])


OUTPUTS = [
    (THINK, True, "Let me see: 2 and 2.</think>\n\nIt is 4.", "Let me see: 2 and 2.", "It is 4."),
    (THINK, False, "<think>\nHmm.\n</think>\n\nFour.", "Hmm.\n", "Four."),
    (THINK, False, "  Just an answer.", "", "  Just an answer."),
    (THINK, True, "Never closed <think> inside", "Never closed <think> inside", ""),
    (MAGISTRAL, False, "[THINK]a[/THINK]b", "a", "b"),
]


@pytest.mark.parametrize(("fmt", "opened", "output", "thought", "answer"), OUTPUTS)
def test_the_splitter_gives_the_same_split_in_every_cut(fmt, opened, output, thought, answer):
    for first in range(len(output) + 1):
        for second in range(first, len(output) + 1):
            splitter = ReasoningSplitter(fmt, opened)
            parts = [
                *splitter.feed(output[:first]),
                *splitter.feed(output[first:second]),
                *splitter.feed(output[second:]),
                *splitter.finish(),
            ]
            got = ("".join(t for k, t in parts if k == "reasoning"),
                   "".join(t for k, t in parts if k == "content"))  # fmt: skip
            assert got == (thought, answer), (first, second)


def test_the_grammar_puts_a_call_after_the_block_and_bounds_it():
    calls = HERMES.grammar([ToolSpec("f", None, {"type": "object"})], True, False)
    for opened in (True, False):
        for budget in (None, 64):
            grammar = reasoning.grammar(calls, THINK, opened, budget)
            structured.check_grammar(grammar, "tools")
            assert ("[max_tokens=64]" in grammar) == (budget == 64)
    assert "answer: /(.|\\n)*/" in reasoning.grammar(None, MAGISTRAL, False, 10)


def test_the_registry_overrides_detection():
    text = (TEMPLATES / "llama31.jinja").read_text()
    forced = ChatTemplate(text, "<s>", "</s>", add_bos=False, reasoning_format="think")
    assert forced.reasoning == THINK
    r1 = (TEMPLATES / "deepseek_r1_distill.jinja").read_text()
    assert ChatTemplate(r1, "<s>", "</s>", False, reasoning_format="none").reasoning is None


def test_an_unknown_reasoning_format_is_refused_by_the_registry():
    from pydantic import ValidationError

    from common.registry import ModelConfig

    with pytest.raises(ValidationError):
        ModelConfig(name="m", backend="llama-cpp", source="/m.gguf", reasoning_format="harmony")
