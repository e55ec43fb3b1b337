"""LFM2's Python-style calls (layers/tool_formats/python_calls.py) without weights: detection
from the real templates, calls the templates (or render_calls) write parsed back, golden outputs
parsed the same however the stream is cut, and grammars that accept exactly the subset they
promise."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from common.turns import ChatTurn, ToolCall, ToolSpec
from layers import tool_formats
from layers.structured import check_grammar
from layers.tool_formats.base import Arguments, CallStarted, Text
from layers.tool_formats.python_calls import END, LFM2, START
from tests.unit.format_checks import every_cut, run
from tests.unit.grammar_check import accepts, literal_for

FAMILIES = Path(__file__).parents[1] / "templates" / "families"
WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "metric": {"type": "boolean"},
        },
        "required": ["city"],
    },
)
TIME = ToolSpec("get_time", None, {"type": "object", "properties": {}})
OPTIONS = ToolSpec(
    "set_options",
    None,
    {
        "type": "object",
        "properties": {
            "enabled": {"type": "boolean"},
            "note": {"type": ["string", "null"]},
            "unit": {"enum": ["c", "f", None]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "place": {"$ref": "#/$defs/Place"},
            "level": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]},
        },
        "$defs": {"Place": {"type": "object", "properties": {"lat": {"type": "number"}}}},
    },
)
ANYTHING = ToolSpec("anything")  # no schema: any keywords
NOTHING = ToolSpec("nothing", None, {"type": "object", "additionalProperties": False})
TOOLS = [WEATHER, TIME, OPTIONS, ANYTHING, NOTHING]


def call(output: str) -> str:
    return f"{START}[{output}]{END}"


# name -> (output after the prompt's `<|im_start|>assistant\n`, the events it means)
GOLDEN = {
    "a call": (
        call('get_weather(city="Paris", days=3)'),
        [CallStarted(0, "get_weather"), Arguments(0, '{"city": "Paris", "days": 3}')],
    ),
    "text, a call, text (the model cards' example)": (
        'Let me check.<|tool_call_start|>[get_weather(city="Paris")]<|tool_call_end|>'
        "Checking the weather in Paris.",
        [
            Text("Let me check."),
            CallStarted(0, "get_weather"),
            Arguments(0, '{"city": "Paris"}'),
            Text("Checking the weather in Paris."),
        ],
    ),
    "two calls, either quote": (
        call("get_weather(city=\"Paris\", metric=True), get_time(zone='CET')"),
        [
            CallStarted(0, "get_weather"),
            Arguments(0, '{"city": "Paris", "metric": true}'),
            CallStarted(1, "get_time"),
            Arguments(1, '{"zone": "CET"}'),
        ],
    ),
    "Python and JSON literals at any depth": (
        call(
            "set_options(enabled=True, note=None, tags=['a', \"b\"], "
            "place={'lat': -0.5, \"ok\": false, 'n': None}, level=(1, 2))"
        ),
        [
            CallStarted(0, "set_options"),
            Arguments(
                0,
                '{"enabled": true, "note": null, "tags": ["a", "b"], '
                '"place": {"lat": -0.5, "ok": false, "n": null}, "level": [1, 2]}',
            ),
        ],
    ),
    "escapes, and brackets and markers inside strings": (
        call(r"""write(text="a\nb \"q\" ), f(x=1) <|tool_call_end|>", path='it\'s')"""),
        [
            CallStarted(0, "write"),
            Arguments(0, '{"text": "a\\nb \\"q\\" ), f(x=1) <|tool_call_end|>", "path": "it\'s"}'),
        ],
    ),
    "no arguments, loose spaces, a dotted name": (
        call(" get_time( ) , Calendar.create_event( title = 'demo' , ) "),
        [
            CallStarted(0, "get_time"),
            Arguments(0, "{}"),
            CallStarted(1, "Calendar.create_event"),
            Arguments(1, '{"title": "demo"}'),
        ],
    ),
    "text that looks like code": (
        "Use [link text](url), or f(x=1) < g(y='<|').",
        [Text("Use [link text](url), or f(x=1) < g(y='<|').")],
    ),
}


def parse(pieces: list[str]) -> tuple[list, int]:
    return run(LFM2.parser(TOOLS), pieces)


def template(name: str) -> str:
    path = FAMILIES / name
    if not path.exists():
        pytest.skip(f"{path} is not vendored")
    return path.read_text()


def test_the_lfm2_template_is_detected():
    assert tool_formats.detect(template("LFM2-8B-A1B.jinja")) == "lfm2"
    assert tool_formats.by_name("lfm2") is LFM2
    assert set(LFM2.markers) == {START, END} and not LFM2.parses_every_answer


@pytest.mark.parametrize("name", ["LFM2.5-8B-A1B.jinja", "LFM2.5-Instruct.jinja"])
def test_the_lfm25_templates_are_detected(name):
    assert tool_formats.detect(template(name)) == "lfm2"


CALLED = ToolCall(
    "call_1",
    "get_weather",
    json.dumps({"city": "Paris", "days": 3, "metric": True, "note": None, "tags": ["a", "b c"]}),
)
CONVERSATION = [
    ChatTurn("user", "Weather in Paris?"),
    ChatTurn("assistant", "Let me check.", tool_calls=(CALLED,)),
    ChatTurn("tool", '{"temp": 20}', tool_call_id="call_1", name="get_weather"),
]


def the_call_in(prompt: str) -> str:
    start = prompt.index(START)
    return prompt[start : prompt.index(END, start) + len(END)]


def assert_parses_to_the_call(output: str) -> None:
    events, calls = parse(list(output))
    assert calls == 1
    assert events[0] == CallStarted(0, "get_weather")
    assert json.loads(events[1].text) == json.loads(CALLED.arguments)


def test_render_calls_writes_what_the_parser_reads():
    rendered = LFM2.render_calls([CALLED, ToolCall("call_2", "get_time", "{}")])
    assert rendered == call(
        'get_weather(city="Paris", days=3, metric=True, note=None, tags=["a", "b c"]), get_time()'
    )
    events, calls = parse([rendered])
    assert calls == 2 and json.loads(events[1].text) == json.loads(CALLED.arguments)


def test_a_call_in_the_lfm2_prompt_is_parsed_back():
    """LFM2-8B-A1B's template does not render calls: the conversation gets them from
    render_calls, in the assistant's text."""
    from layers.chat_template import ChatTemplate

    chat = ChatTemplate(template("LFM2-8B-A1B.jinja"), "<|startoftext|>", "<|im_end|>", False)
    prompt = chat.text(CONVERSATION, [WEATHER])
    assert "<|tool_list_start|>" in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert LFM2.render_calls([CALLED]) in prompt
    assert_parses_to_the_call(the_call_in(prompt))


def test_a_call_the_lfm25_template_renders_is_parsed_back():
    """LFM2.5-8B-A1B's template renders calls itself: single quotes, Python's True and None,
    lists in Python's repr."""
    from layers.chat_template import ChatTemplate

    chat = ChatTemplate(template("LFM2.5-8B-A1B.jinja"), "<|startoftext|>", "<|im_end|>", False)
    rendered = the_call_in(chat.text(CONVERSATION, [WEATHER]))
    assert "city='Paris'" in rendered and "metric=True" in rendered
    assert_parses_to_the_call(rendered)


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_outputs_parse_the_same_however_they_are_cut(name):
    output, expected = GOLDEN[name]
    calls = sum(isinstance(e, CallStarted) for e in expected)
    for pieces in every_cut(output):
        assert parse(pieces) == (expected, calls), pieces


def test_arguments_stream_as_each_value_ends():
    parser = LFM2.parser()
    events = list(parser.feed(START + '[get_weather(city="Paris", da'))
    assert events == [
        CallStarted(0, "get_weather"),
        Arguments(0, "{"),
        Arguments(0, '"city": '),
        Arguments(0, '"Paris"'),
    ]
    assert list(parser.feed("ys=3)]")) == [Arguments(0, ', "days": '), Arguments(0, "3")] + [
        Arguments(0, "}")
    ]
    assert parser.calls == 1


def test_a_partial_marker_is_held_back_then_released_by_finish():
    parser = LFM2.parser()
    assert list(parser.feed("Type <|tool_ca")) == [Text("Type ")]
    assert list(parser.finish()) == [Text("<|tool_ca")]


def test_the_end_marker_need_not_be_seen(caplog):
    caplog.set_level(logging.WARNING, logger="stratus.tool_calls")
    output = GOLDEN["a call"][0].removesuffix(END)
    assert parse(list(output)) == (GOLDEN["a call"][1], 1)
    assert not caplog.records


@pytest.mark.parametrize(
    "output",
    [
        call('get_weather("Paris")'),  # a positional argument
        call("get_weather(city=Paris)"),  # a name, not a literal
        call("get_weather(city={1, 2})"),  # a set: no JSON for it
        call("get_weather city='Paris'"),  # no parentheses
        START + "get_weather(city='Paris')" + END,  # no list
    ],
)
def test_what_cannot_be_parsed_is_logged_not_guessed(output, caplog):
    caplog.set_level(logging.WARNING, logger="stratus.tool_calls")
    events, calls = parse(list(output + "After."))
    assert calls == 0
    assert events[-1] == Text("After.")  # the text after the end marker is still text
    assert not [e for e in events if isinstance(e, Arguments) and e.text.endswith("}")]
    assert [r.name for r in caplog.records] == ["stratus.tool_calls"]


def test_an_unfinished_call_is_logged_and_not_counted(caplog):
    caplog.set_level(logging.WARNING, logger="stratus.tool_calls")
    events, calls = parse([START + '[get_weather(city="Par'])
    assert calls == 0 and events == [CallStarted(0, "get_weather"), Arguments(0, '{"city": ')]
    assert caplog.records


def test_a_call_after_a_broken_one_gets_its_own_index(caplog):
    caplog.set_level(logging.WARNING, logger="stratus.tool_calls")
    events, calls = parse([call("get_weather(city=Paris)") + call("get_time()")])
    assert calls == 1
    assert [e for e in events if isinstance(e, CallStarted)] == [
        CallStarted(0, "get_weather"),
        CallStarted(1, "get_time"),
    ]


def token_literal(marker: str) -> str:
    return f"<[{100 + LFM2.markers.index(marker)}]>"


@pytest.mark.parametrize("literal", [None, token_literal], ids=["strings", "tokens"])
def test_the_grammars_compile(literal):
    kwargs = {"literal": literal} if literal else {}
    for required in (True, False):
        for parallel in (True, False):
            check_grammar(LFM2.grammar(TOOLS, required, parallel, **kwargs), "tools")


@pytest.mark.parametrize("markers", [(START, END), ()], ids=["tokens", "strings"])
def test_the_grammars_accept_the_subset_they_promise(markers):
    """With the markers as special tokens (LFM2's vocabulary) and spelt as text."""
    literal = literal_for(markers)
    auto = LFM2.grammar(TOOLS, required=False, parallel=True, literal=literal)
    required = LFM2.grammar(TOOLS, required=True, parallel=True, literal=literal)
    single = LFM2.grammar(TOOLS, required=True, parallel=False, literal=literal)

    def ok(grammar: str, output: str) -> bool:
        return accepts(grammar, output, markers)

    one = call('get_weather(city="Paris", days=3)')
    assert ok(auto, one) and ok(required, one) and ok(single, one)
    model_card = GOLDEN["text, a call, text (the model cards' example)"][0]
    assert ok(auto, model_card) and not ok(required, model_card)
    assert ok(auto, "Just text, a [link](url) < <|") and not ok(required, "Just text")
    two = call('get_weather(city="Paris", metric=False), get_time()')
    assert ok(required, two) and not ok(single, two)
    assert ok(auto, "Hi <|tool_c " + one)  # a marker's start in the text before
    typed = (
        'set_options(enabled=True, note=None, unit="f", tags=["a"], place={"lat": 1.5}, '
        "level=False)"
    )
    assert ok(required, call(typed))
    assert ok(required, call("set_options(unit=None, level=2)"))
    assert ok(required, call('anything(x=1, y="z", flag=True)'))
    assert ok(required, call("nothing()")) and not ok(required, call("nothing(x=1)"))
    for wrong in [
        "get_weather(days=3)",  # the required city is missing
        'get_weather(days=3, city="Paris")',  # out of the properties' order
        'get_weather(city="Paris", metric=true)',  # JSON's true at the top of a value
        "get_weather(city='Paris')",  # single quotes: read, not written
        'get_weather(city="Paris", days="3")',  # the schema's type
        'unknown(city="Paris")',
        'set_options(unit="k")',
    ]:
        assert not ok(required, call(wrong)), wrong
