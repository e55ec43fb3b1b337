"""The tool-call format: its parser over every way a stream can be cut, its grammar, its prompt."""

from __future__ import annotations

import json

import pytest

from layers import tool_calls
from layers.structured import check_grammar
from layers.text import ChatTurn, ToolCall, ToolSpec

WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec("get_time", None, {"type": "object", "properties": {}})

TEXT_THEN_TWO_CALLS = (
    "Let me look.\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris {x} \\"y\\""}}'
    "\n</tool_call>\n"
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
)


def parse(pieces: list[str]) -> tuple[str, list[tuple[str, str]], list[tool_calls.Event]]:
    parser = tool_calls.ToolCallParser()
    events = [e for piece in pieces for e in parser.feed(piece)] + list(parser.finish())
    content = "".join(e.text for e in events if isinstance(e, tool_calls.Text))
    calls: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, tool_calls.CallStarted):
            calls[e.index] = [e.name, ""]
        elif isinstance(e, tool_calls.Arguments):
            calls[e.index][1] += e.text
    return content, [tuple(c) for _, c in sorted(calls.items())], events


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 1000])
def test_the_parser_gives_the_same_answer_however_the_text_is_cut(size):
    pieces = [TEXT_THEN_TWO_CALLS[i : i + size] for i in range(0, len(TEXT_THEN_TWO_CALLS), size)]
    content, calls, events = parse(pieces)
    assert content == "Let me look.\n"
    assert calls == [("get_weather", '{"city": "Paris {x} \\"y\\""}'), ("get_time", "{}")]
    json.loads(calls[0][1])
    # A call starts once; argument fragments come after it, never before.
    starts = [i for i, e in enumerate(events) if isinstance(e, tool_calls.CallStarted)]
    assert len(starts) == 2
    assert all(not isinstance(e, tool_calls.Arguments) or e.index == 0 for e in events[: starts[1]])


def test_text_that_only_looks_like_the_tag_is_text():
    content, calls, _ = parse(["a <tool", "_ca", "ll is not here: <tool_cal"])
    assert content == "a <tool_call is not here: <tool_cal"
    assert calls == []


def test_arguments_stream_before_the_call_ends():
    parser = tool_calls.ToolCallParser()
    events = list(parser.feed('<tool_call>\n{"name": "get_weather", "arguments": {"ci'))
    assert events == [tool_calls.CallStarted(0, "get_weather"), tool_calls.Arguments(0, '{"ci')]


def test_the_grammars_compile():
    for required in (True, False):
        for parallel in (True, False):
            check_grammar(tool_calls.grammar([WEATHER, TIME], required, parallel), "tools")


def test_a_template_without_tools_sees_calls_and_results_as_text():
    turns = [
        ChatTurn("user", "Weather?"),
        ChatTurn("assistant", "", (ToolCall("c1", "get_weather", '{"city": "Oslo"}'),)),
        ChatTurn("tool", "rain", tool_call_id="c1", name="get_weather"),
        ChatTurn("tool", "cold", tool_call_id="c1", name="get_weather"),
    ]
    plain = tool_calls.as_plain_turns(turns)
    assert [t.role for t in plain] == ["user", "assistant", "user"]
    assert plain[1].content == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    assert plain[2].content.count("<tool_response>") == 2


def test_the_system_prompt_lists_every_tool():
    prompt = tool_calls.system_prompt([WEATHER, TIME], required=False)
    assert '"name": "get_weather"' in prompt and '"name": "get_time"' in prompt
    assert "<tool_call>" in prompt
