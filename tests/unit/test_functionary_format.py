"""Functionary v3.2's recipients (layers/tool_formats/functionary.py) without weights: detection
from the real template, calls the template renders parsed back, golden outputs parsed the same
however the stream is cut, and grammars that accept those outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from common.turns import ChatTurn, ToolCall, ToolSpec
from layers import tool_formats
from layers.structured import check_grammar
from layers.tool_formats.base import Arguments, CallStarted, Text
from layers.tool_formats.functionary import FUNCTIONARY_V32
from tests.unit.format_checks import every_cut, merged, run
from tests.unit.grammar_check import accepts

TEMPLATE = Path(__file__).parents[1] / "templates" / "families"
TEMPLATE /= "meetkai-functionary-medium-v3.2.jinja"
GENERATION_PROMPT = "<|start_header_id|>assistant<|end_header_id|>\n\n>>>"
WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec("get_time", None, {"type": "object", "properties": {"zone": {"type": "string"}}})
ARGS = '{"city": "Paris"}'

# name -> (output after the prompt's `>>>`, the events it means)
GOLDEN = {
    "text": (
        "all\nHello, world!\nWhat's up? a >> b > c",
        [Text("Hello, world!\nWhat's up? a >> b > c")],
    ),
    "a call": (
        "get_weather\n" + ARGS,
        [CallStarted(0, "get_weather"), Arguments(0, ARGS)],
    ),
    "text then two calls (as the template renders them)": (
        "all\nLet me check.>>>get_weather\n" + ARGS + '>>>get_time\n{"zone": "CET"}',
        [
            Text("Let me check."),
            CallStarted(0, "get_weather"),
            Arguments(0, ARGS),
            CallStarted(1, "get_time"),
            Arguments(1, '{"zone": "CET"}'),
        ],
    ),
    "braces and >>> inside a string": (
        'get_weather\n{"city": "Pa>>>ris {x}\\" }"}',
        [CallStarted(0, "get_weather"), Arguments(0, '{"city": "Pa>>>ris {x}\\" }"}')],
    ),
    "text after a call": (
        "get_time\n{}>>>all\nDone.",
        [CallStarted(0, "get_time"), Arguments(0, "{}"), Text("Done.")],
    ),
    "the prompt's >>> written again": (">>>all\nHi", [Text("Hi")]),
    "no recipient at all": ("Hello there.", [Text("Hello there.")]),
}


def parse(pieces: list[str]) -> tuple[list, int]:
    return run(FUNCTIONARY_V32.parser(), pieces)


def template_source() -> str:
    if not TEMPLATE.exists():
        pytest.skip(f"{TEMPLATE} is not vendored")
    return TEMPLATE.read_text()


def test_the_real_template_is_detected():
    assert tool_formats.detect(template_source()) == "functionary-v3.2"
    assert tool_formats.by_name("functionary-v3.2") is FUNCTIONARY_V32
    # Plain answers start with `all\n` too: the parser must see every answer.
    assert FUNCTIONARY_V32.parses_every_answer and FUNCTIONARY_V32.markers == ()


def test_calls_the_template_renders_are_parsed_back():
    from layers.chat_template import ChatTemplate

    chat = ChatTemplate(template_source(), "<|begin_of_text|>", "<|eot_id|>", False)
    calls = (
        ToolCall("call_1", "get_weather", '{"city": "Paris", "note": "a >> b {c}"}'),
        ToolCall("call_2", "get_time", "{}"),
    )
    turns = [
        ChatTurn("user", "Weather in Paris?"),
        ChatTurn("assistant", "Let me check.", tool_calls=calls),
        ChatTurn("tool", '{"temp": 20}', tool_call_id="call_1", name="get_weather"),
        ChatTurn("tool", '{"time": "noon"}', tool_call_id="call_2", name="get_time"),
    ]
    # The template concatenates arguments: they reach it as text.
    prompt = chat.text(turns, [WEATHER, TIME])
    assert prompt.endswith(GENERATION_PROMPT)
    assert ">>>all\nLet me check." + FUNCTIONARY_V32.render_calls(calls) in prompt
    answer = prompt.split("Weather in Paris?<|eot_id|>" + GENERATION_PROMPT, 1)[1]
    answer = answer[: answer.index("<|eot_id|>")]
    events, count = parse(list(answer))
    assert count == 2 and events[0] == Text("Let me check.")
    started = [e for e in events if isinstance(e, CallStarted)]
    assert started == [CallStarted(0, "get_weather"), CallStarted(1, "get_time")]
    arguments = [json.loads(e.text) for e in events if isinstance(e, Arguments)]
    assert arguments == [json.loads(c.arguments) for c in calls]


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_outputs_parse_the_same_however_they_are_cut(name, caplog):
    caplog.set_level(logging.WARNING, logger="stratus.tool_calls")
    output, expected = GOLDEN[name]
    calls = sum(isinstance(e, CallStarted) for e in expected)
    for pieces in every_cut(output):
        assert parse(pieces) == (expected, calls), pieces
    assert not caplog.records


def test_arguments_stream_as_they_arrive():
    parser = FUNCTIONARY_V32.parser()
    assert list(parser.feed('get_weather\n{"city": "Pa')) == [
        CallStarted(0, "get_weather"),
        Arguments(0, '{"city": "Pa'),
    ]
    assert list(parser.feed('ris"}>')) == [Arguments(0, 'ris"}')]
    assert parser.calls == 1


def test_a_partial_header_is_held_back_then_released_by_finish():
    parser = FUNCTIONARY_V32.parser()
    assert list(parser.feed("all\nType a >")) == [Text("Type a ")]
    assert list(parser.feed(">")) == []
    assert list(parser.finish()) == [Text(">>")]


@pytest.mark.parametrize(
    "output, events",
    [
        ("get_weather\nParis", []),  # arguments that are not JSON: no call is started
        ("all\nHi>>>bad name\n{}", [Text("Hi")]),  # no recipient's name
        ('get_weather\n{"city": Paris}', [CallStarted(0, "get_weather")]),  # JSON-like, not JSON
        ('get_weather\n{"city": "Pa', [CallStarted(0, "get_weather")]),  # unfinished
        ("get_time\n{} and more", [CallStarted(0, "get_time")]),  # text without a recipient
    ],
)
def test_what_cannot_be_parsed_is_logged_not_guessed(output, events, caplog):
    caplog.set_level(logging.WARNING, logger="stratus.tool_calls")
    parsed, calls = parse(list(output))
    assert [e for e in parsed if not isinstance(e, Arguments)] == events
    assert calls == (1 if output.startswith("get_time") else 0)
    assert len(caplog.records) == 1 and caplog.records[0].name == "stratus.tool_calls"


def test_render_calls_writes_what_the_template_writes():
    calls = [ToolCall("a", "get_weather", ARGS), ToolCall("b", "get_time", "{}")]
    assert FUNCTIONARY_V32.render_calls(calls) == f">>>get_weather\n{ARGS}>>>get_time\n{{}}"


@pytest.mark.parametrize("literal", [None, lambda marker: "<[123]>"], ids=["strings", "tokens"])
def test_the_grammars_compile(literal):
    kwargs = {"literal": literal} if literal else {}
    for required in (True, False):
        for parallel in (True, False):
            grammar = FUNCTIONARY_V32.grammar([WEATHER, TIME], required, parallel, **kwargs)
            check_grammar(grammar, "tools")


def test_the_grammars_accept_the_golden_outputs():
    tools = [WEATHER, TIME]
    auto = FUNCTIONARY_V32.grammar(tools, required=False, parallel=True)
    auto_single = FUNCTIONARY_V32.grammar(tools, required=False, parallel=False)
    required = FUNCTIONARY_V32.grammar(tools, required=True, parallel=True)
    single = FUNCTIONARY_V32.grammar(tools, required=True, parallel=False)
    text, one = GOLDEN["text"][0], GOLDEN["a call"][0]
    both = GOLDEN["text then two calls (as the template renders them)"][0]
    assert accepts(auto, text) and accepts(auto, one) and accepts(auto, both)
    assert accepts(auto, "all\nLet me check.>>>" + one) and accepts(auto_single, one)
    assert not accepts(auto_single, both)
    assert accepts(required, one) and accepts(single, one)
    assert accepts(required, one + '>>>get_time\n{"zone": "CET"}')
    assert not accepts(single, one + ">>>get_time\n{}")
    assert not accepts(required, text) and not accepts(required, both)
    for wrong in ["get_weather\n{}", "get_weather\n{'city': 'Paris'}", "unknown\n{}", "Hello"]:
        assert not accepts(auto, wrong) and not accepts(required, wrong), wrong


def test_a_json_answer_comes_after_the_text_recipient():
    from layers.structured import json_schema_grammar

    assert FUNCTIONARY_V32.answer_grammar(None) is None  # free text: the parser strips `all\n`
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    grammar = FUNCTIONARY_V32.answer_grammar(json_schema_grammar(schema, "response_format"))
    check_grammar(grammar, "response_format")
    assert accepts(grammar, 'all\n{"a": 1}')
    assert not accepts(grammar, '{"a": 1}') and not accepts(grammar, "all\nHi")
    parser = FUNCTIONARY_V32.parser([WEATHER])
    assert merged([*parser.feed('all\n{"a": 1}'), *parser.finish()]) == [Text('{"a": 1}')]
