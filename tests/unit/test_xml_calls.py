"""Qwen3-Coder's XML calls (layers/tool_formats/xml_calls.py): detection on the real templates,
the templates' rendering of calls parsed back, the parser over every cut of canonical outputs,
and the grammars."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from common.turns import ChatTurn, ToolCall, ToolSpec
from layers import tool_formats
from layers.structured import check_grammar
from layers.tool_formats.base import Arguments, CallStarted, Text
from layers.tool_formats.xml_calls import QWEN3_CODER
from tests.unit.format_checks import every_cut

FAMILIES = Path(__file__).resolve().parents[1] / "templates" / "families"
LLAMA_CPP = Path(
    "/tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates"
)  # llama-cpp-python's sdist, where the repository does not keep a template yet
# The templates that write calls in this format (and render earlier ones in it).
XML_TEMPLATES = (
    "Qwen3-Coder.jinja",
    "Qwen3.5-4B.jinja",
    "NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.jinja",
    "StepFun3.5-Flash.jinja",
)

WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "metric": {"type": "boolean"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
            "hours": {"type": "array", "items": {"type": "integer"}},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["city"],
    },
)
TIME = ToolSpec("get_time", None, {"type": "object", "properties": {}})
TOOLS = [WEATHER, TIME]


def template(name: str) -> str:
    for folder in (FAMILIES, LLAMA_CPP):
        if (folder / name).exists():
            return (folder / name).read_text()
    pytest.skip(f"{name} is in neither tests/templates/families nor llama-cpp-python's sdist")


def call(name: str, *parameters: tuple[str, str]) -> str:
    """A call as the model writes it: each raw value between its own lines."""
    lines = ["<tool_call>", f"<function={name}>"]
    for key, raw in parameters:
        lines += [f"<parameter={key}>", raw, "</parameter>"]
    return "\n".join([*lines, "</function>", "</tool_call>"])


def parse(pieces: list[str], tools=TOOLS) -> tuple[str, list[tuple[str, str]], int]:
    """The text, each call's name and arguments, and how many calls the parser saw end."""
    parser = QWEN3_CODER.parser(tools)
    events = [e for piece in pieces for e in parser.feed(piece)] + list(parser.finish())
    calls: dict[int, list[str]] = {}
    for event in events:
        if isinstance(event, CallStarted):
            assert event.index not in calls  # a call starts once
            calls[event.index] = [event.name, ""]
        elif isinstance(event, Arguments):
            calls[event.index][1] += event.text  # never before its call started
    text = "".join(e.text for e in events if isinstance(e, Text))
    return text, [(name, arguments) for name, arguments in calls.values()], parser.calls


CANONICAL = [
    (
        "Let me look.\n\n" + call("get_weather", ("city", "Paris"), ("days", "3")),
        "Let me look.\n\n",
        [("get_weather", {"city": "Paris", "days": 3})],
    ),
    (
        call("get_weather", ("city", "Oslo")) + "\n" + call("get_time"),
        "",
        [("get_weather", {"city": "Oslo"}), ("get_time", {})],
    ),
    (
        call("get_weather", ("city", "New\nYork <b>\n\n"), ("note", 'a "quote"\n  indented')),
        "",
        [("get_weather", {"city": "New\nYork <b>\n\n", "note": 'a "quote"\n  indented'})],
    ),
    (
        call(
            "get_weather",
            ("city", "Lima"),
            ("metric", "true"),
            ("unit", "celsius"),
            ("where", '{"lat": -12.05}'),
            ("hours", "[6, 12]"),
            ("note", "null"),
        ),
        "",
        [
            (
                "get_weather",
                {
                    "city": "Lima",
                    "metric": True,
                    "where": {"lat": -12.05},
                    "hours": [6, 12],
                    "unit": "celsius",
                    "note": None,
                },
            )
        ],
    ),
    (call("get_time"), "", [("get_time", {})]),
    ("No call here: a <tool_call is not one.", "No call here: a <tool_call is not one.", []),
]


@pytest.mark.parametrize("output,text,calls", CANONICAL)
def test_every_cut_of_an_answer_gives_the_same_text_and_calls(output, text, calls):
    first = None
    for pieces in every_cut(output):
        content, parsed, finished = parse(pieces)
        assert content == text and finished == len(calls)
        assert [(name, json.loads(arguments)) for name, arguments in parsed] == calls
        # The same arguments' JSON text, however the output was cut.
        first = first or parsed
        assert parsed == first


def test_arguments_stream_a_value_at_a_time_in_stratus_json_layout():
    parser = QWEN3_CODER.parser(TOOLS)
    head = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    assert list(parser.feed(head)) == [
        CallStarted(0, "get_weather"),
        Arguments(0, '{"city": "Paris"'),
    ]
    assert list(parser.feed("<parameter=days>\n3\n</parameter>\n")) == [Arguments(0, ', "days": 3')]
    assert list(parser.feed("</function>\n</tool_call>")) == [Arguments(0, "}")]
    assert parser.calls == 1


def test_text_is_held_back_only_while_it_may_become_the_tag():
    parser = QWEN3_CODER.parser(TOOLS)
    assert list(parser.feed("Sure <tool")) == [Text("Sure ")]
    assert list(parser.feed("s are fine")) == [Text("<tools are fine")]


def test_a_value_that_is_not_json_is_kept_as_a_string_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="stratus.tool_calls"):
        _, calls, _ = parse([call("get_weather", ("city", "Rome"), ("days", "three"))])
    assert json.loads(calls[0][1]) == {"city": "Rome", "days": "three"}
    assert "not JSON" in caplog.text


def test_without_the_tools_values_are_typed_by_guess():
    _, calls, _ = parse([call("f", ("a", "text"), ("b", "2"), ("c", '{"x": 1}'))], tools=())
    assert json.loads(calls[0][1]) == {"a": "text", "b": 2, "c": {"x": 1}}


def test_an_unfinished_call_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="stratus.tool_calls"):
        parse(["<tool_call>\n<function=get_weather>\n<parameter=city>\nPar"])
    assert "unfinished" in caplog.text


@pytest.mark.parametrize("name", XML_TEMPLATES)
def test_the_templates_are_detected_as_this_format(name):
    assert tool_formats.detect(template(name)) == "qwen3-coder"
    assert tool_formats.by_name("qwen3-coder") is QWEN3_CODER


ARGUMENTS = {
    "city": "New\nYork",
    "days": 3,
    "metric": True,
    "where": {"lat": 40.7},
    "hours": [6, 12],
}


@pytest.mark.parametrize("name", XML_TEMPLATES)
def test_a_call_the_template_renders_parses_back_into_the_same_call(name):
    from layers.chat_template import ChatTemplate

    turns = [
        ChatTurn("user", "Weather?"),
        ChatTurn(
            "assistant",
            "",
            (
                ToolCall("c1", "get_weather", json.dumps(ARGUMENTS)),
                ToolCall("c2", "get_time", "{}"),
            ),
        ),
        ChatTurn("tool", "rain", tool_call_id="c1", name="get_weather"),
        ChatTurn("tool", "noon", tool_call_id="c2", name="get_time"),
    ]
    prompt = ChatTemplate(template(name), "", "<|im_end|>", False).text(turns, TOOLS)
    asked = prompt.index("Weather?")  # the system prompt shows an example call before it
    answer = prompt[prompt.index("<tool_call>", asked) : prompt.rindex("</tool_call>") + 12]
    for pieces in ([answer], list(answer)):
        _, calls, _ = parse(pieces)
        assert [(n, json.loads(a)) for n, a in calls] == [
            ("get_weather", ARGUMENTS),
            ("get_time", {}),
        ]


def test_render_calls_writes_what_the_parser_reads():
    calls = [ToolCall("c1", "get_weather", json.dumps(ARGUMENTS)), ToolCall("c2", "get_time", "")]
    rendered = QWEN3_CODER.render_calls(calls)
    assert rendered.startswith("<tool_call>\n<function=get_weather>\n<parameter=city>\nNew\nYork\n")
    _, parsed, _ = parse([rendered])
    assert [(n, json.loads(a)) for n, a in parsed] == [
        ("get_weather", ARGUMENTS),
        ("get_time", {}),
    ]


def special(marker: str) -> str:
    return {"<tool_call>": "<[151657]>", "</tool_call>": "<[151658]>"}[marker]


@pytest.mark.parametrize("literal", [None, special])
@pytest.mark.parametrize("required", [True, False])
@pytest.mark.parametrize("parallel", [True, False])
def test_the_grammars_validate(literal, required, parallel):
    extra = {"literal": literal} if literal else {}
    grammar = QWEN3_CODER.grammar(TOOLS, required, parallel, **extra)
    check_grammar(grammar, "tools")
    assert ('"<parameter=city>\\n" RAW_VALUE') in grammar  # strings are raw text
    assert '("celsius" | "fahrenheit")' in grammar  # a string enum: its values
    assert '%json {"type": "integer"' in grammar  # other types: JSON
    assert '"<function=get_time>\\n" "</function>\\n"' in grammar  # no parameters


@pytest.fixture(scope="module")
def vocabulary():
    """A small byte-level vocabulary trained here, with the tags as special tokens (Qwen's)."""
    import llguidance.hf
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    tags = ["<tool_call>", "</tool_call>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([CANONICAL[0][0]] * 10, vocab_size=300, special_tokens=["</s>", *tags])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="</s>", additional_special_tokens=tags
    )
    return tokenizer, llguidance.hf.from_tokenizer(tokenizer)


def matches(vocabulary, grammar: str, output: str, tags_as_tokens: bool) -> bool:
    """Whether the grammar lets the model write `output` a character at a time, then stop."""
    import re

    import llguidance

    tokenizer, grammar_tokenizer = vocabulary
    matcher = llguidance.LLMatcher(grammar_tokenizer, grammar)
    pieces = re.split("(</?tool_call>)", output) if tags_as_tokens else [output]
    tokens = []
    for piece in pieces:
        if piece in ("<tool_call>", "</tool_call>"):
            tokens.append(tokenizer.convert_tokens_to_ids(piece))
        else:
            tokens += [t for c in piece for t in tokenizer.encode(c, add_special_tokens=False)]
    accepted = all(matcher.consume_token(t) for t in tokens)
    return accepted and matcher.consume_token(tokenizer.eos_token_id) and matcher.is_accepting()


@pytest.mark.parametrize("tags_as_tokens", [True, False])
def test_the_grammar_lets_the_model_write_what_the_parser_reads(vocabulary, tags_as_tokens):
    tokenizer, _ = vocabulary
    ids = {tag: tokenizer.convert_tokens_to_ids(tag) for tag in ("<tool_call>", "</tool_call>")}
    literal = (lambda marker: f"<[{ids[marker]}]>") if tags_as_tokens else None
    extra = {"literal": literal} if literal else {}
    auto = QWEN3_CODER.grammar(TOOLS, required=False, parallel=True, **extra)
    required = QWEN3_CODER.grammar(TOOLS, required=True, parallel=False, **extra)
    for output, text, calls in CANONICAL:
        assert matches(vocabulary, auto, output, tags_as_tokens)
        assert matches(vocabulary, required, output, tags_as_tokens) == (
            not text and len(calls) == 1
        )
    refused = [
        call("get_weather", ("city", "a\n</parameter>\nb")),  # a value cannot hold the tag
        call("get_weather", ("days", "3")),  # a required parameter left out
        call("get_weather", ("city", "Rome"), ("days", "three")),  # an integer that is not one
        call("get_weather", ("city", "Rome"), ("unit", "kelvin")),  # not one of the enum
        call("get_weather", ("days", "3"), ("city", "Rome")),  # the schema's order
    ]
    for output in refused:
        assert not matches(vocabulary, auto, output, tags_as_tokens)
