"""GPT-OSS's harmony format (layers/tool_formats/harmony.py) without weights: detection from
the real template, a call the template renders parsed back, golden outputs parsed the same
however the stream is cut, and grammars that accept those outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from common.turns import ChatTurn, ToolCall, ToolSpec
from layers import tool_formats
from layers.structured import check_grammar, json_schema_grammar
from layers.tool_formats.base import Arguments, CallStarted, Reasoning, Text
from layers.tool_formats.harmony import HARMONY, MARKERS
from tests.unit.format_checks import every_cut, run

TEMPLATE = Path(__file__).parents[1] / "templates" / "families" / "openai-gpt-oss-120b.jinja"
WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec("get_time", None, {"type": "object", "properties": {}})
GOLDEN_REASONING = "User wants the weather; a < b | c."
THINK = f"<|channel|>analysis<|message|>{GOLDEN_REASONING}<|end|>"
TO_WEATHER = "<|start|>assistant<|channel|>commentary to=functions.get_weather "
ARGS = '{"city": "Paris"}'

# name -> (output after the prompt's `<|start|>assistant`, the events it means)
GOLDEN = {
    "reasoning then final": (
        THINK + "<|start|>assistant<|channel|>final<|message|>Sunny, 20 < 25 |x|.<|return|>",
        [Reasoning(GOLDEN_REASONING), Text("Sunny, 20 < 25 |x|.")],
    ),
    "reasoning then a call": (
        THINK + TO_WEATHER + "<|constrain|>json<|message|>" + ARGS + "<|call|>",
        [
            Reasoning(GOLDEN_REASONING),
            CallStarted(0, "get_weather"),
            Arguments(0, ARGS),
        ],
    ),
    "a preamble then a call": (  # the cookbook's preamble, `<|constrain|>` without a space
        THINK + "<|start|>assistant<|channel|>commentary<|message|>Checking Paris.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.get_weather<|constrain|>json"
        "<|message|>" + ARGS + "<|call|>",
        [
            Reasoning(GOLDEN_REASONING),
            Text("Checking Paris."),
            CallStarted(0, "get_weather"),
            Arguments(0, ARGS),
        ],
    ),
    "two calls": (
        THINK + TO_WEATHER + "<|constrain|>json<|message|>" + ARGS + "<|call|>"
        "<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json"
        "<|message|>{}<|call|>",
        [
            Reasoning(GOLDEN_REASONING),
            CallStarted(0, "get_weather"),
            Arguments(0, ARGS),
            CallStarted(1, "get_time"),
            Arguments(1, "{}"),
        ],
    ),
    "the recipient before the channel": (  # as the template renders calls
        THINK + "<|start|>assistant to=functions.get_weather<|channel|>commentary json"
        "<|message|>" + ARGS + "<|call|>",
        [
            Reasoning(GOLDEN_REASONING),
            CallStarted(0, "get_weather"),
            Arguments(0, ARGS),
        ],
    ),
}
CALLS = {
    name: sum(isinstance(e, CallStarted) for e in events) for name, (_, events) in GOLDEN.items()
}


def parse(pieces: list[str]) -> tuple[list, int]:
    return run(HARMONY.parser(), pieces)


def template_source() -> str:
    if not TEMPLATE.exists():
        pytest.skip(f"{TEMPLATE} is not vendored")
    return TEMPLATE.read_text()


def test_the_real_template_is_detected_as_harmony():
    source = template_source()
    assert tool_formats.detect(source) == "harmony"
    assert tool_formats.by_name("harmony") is HARMONY
    assert HARMONY.parses_every_answer and set(HARMONY.markers) == set(MARKERS)


def test_a_call_the_template_renders_is_parsed_back():
    from layers.chat_template import ChatTemplate

    template = ChatTemplate(template_source(), "<|startoftext|>", "<|return|>", False)
    call = ToolCall("call_1", "get_weather", '{"city": "Paris", "note": "a <b> \\"c\\""}')
    turns = [
        ChatTurn("user", "Weather in Paris?"),
        ChatTurn("assistant", "", tool_calls=(call,)),
        ChatTurn("tool", '{"temp": 20}', tool_call_id="call_1", name="get_weather"),
    ]
    prompt = template.text(turns, [WEATHER])
    assert HARMONY.render_calls([call]) in prompt
    # The assistant's turn as the model wrote it: after the prompt's `<|start|>assistant`.
    answer = prompt.split("Weather in Paris?<|end|><|start|>assistant", 1)[1]
    answer = answer[: answer.index("<|call|>") + len("<|call|>")]
    events, calls = parse([answer])
    assert calls == 1
    assert [e for e in events if isinstance(e, CallStarted)] == [CallStarted(0, "get_weather")]
    arguments = "".join(e.text for e in events if isinstance(e, Arguments))
    assert json.loads(arguments) == json.loads(call.arguments)
    assert not [e for e in events if isinstance(e, Text)]


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_outputs_parse_the_same_however_they_are_cut(name):
    output, expected = GOLDEN[name]
    for pieces in every_cut(output):
        assert parse(pieces) == (expected, CALLS[name]), pieces


@pytest.mark.parametrize("name", GOLDEN)
def test_the_end_of_generation_token_need_not_be_seen(name):
    output, expected = GOLDEN[name]
    for end in ("<|call|>", "<|return|>"):
        output = output.removesuffix(end)
    assert parse(list(output)) == (expected, CALLS[name])


def test_a_partial_marker_is_held_back_then_released_by_finish():
    parser = HARMONY.parser()
    fed = list(parser.feed("<|channel|>final<|message|>Type a <|"))
    assert fed == [Text("Type a ")]
    assert list(parser.finish()) == [Text("<|")]


def test_a_call_on_the_analysis_channel_and_a_stray_header_parse(caplog):
    caplog.set_level(logging.WARNING, logger="stratus.tool_calls")
    # Both seen from gpt-oss-20b (llama.cpp's tests/test-chat.cpp).
    role_first = ' to=functions.get_weather<|channel|>analysis <|constrain|>json<|message|>{"a": 1}'
    assert parse([role_first]) == ([CallStarted(0, "get_weather"), Arguments(0, '{"a": 1}')], 1)
    stray = "<|channel|>commentary to=assistant" + THINK
    stray += "<|start|>assistant<|channel|>final<|message|>Hi"
    assert parse([stray]) == ([Reasoning(GOLDEN_REASONING), Text("Hi")], 0)
    assert not caplog.records


def test_what_cannot_be_parsed_is_logged_not_guessed(caplog):
    caplog.set_level(logging.WARNING, logger="stratus.tool_calls")
    builtin = THINK + "<|start|>assistant<|channel|>commentary to=python <|constrain|>code"
    assert parse([builtin + "<|message|>print(1)"]) == ([Reasoning(GOLDEN_REASONING)], 0)
    cut_off = THINK + TO_WEATHER + '<|constrain|>json<|message|>{"city": "Pa'
    events, calls = parse([cut_off])
    assert calls == 0 and events[-1] == Arguments(0, '{"city": "Pa')
    assert parse([THINK + "<|start|>assistant<|channel|>fin"]) == ([Reasoning(GOLDEN_REASONING)], 0)
    assert len(caplog.records) == 3
    assert all(r.name == "stratus.tool_calls" for r in caplog.records)


def test_text_outside_any_message_is_text_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="stratus.tool_calls")
    output = "Hello there,\nfriend.<|end|><|start|>assistant<|channel|>final<|message|>Hi"
    assert parse(list(output)) == ([Text("Hello there,\nfriend.Hi")], 0)
    assert parse(["Hi"]) == ([Text("Hi")], 0)
    assert caplog.records


def token_literal(marker: str) -> str:
    return f"<[{200000 + MARKERS.index(marker)}]>"


@pytest.mark.parametrize("literal", [None, token_literal], ids=["strings", "tokens"])
def test_the_grammars_compile(literal):
    kwargs = {"literal": literal} if literal else {}
    for required in (True, False):
        for parallel in (True, False):
            check_grammar(HARMONY.grammar([WEATHER, TIME], required, parallel, **kwargs), "tools")
    check_grammar(HARMONY.answer_grammar(None, **kwargs), "response_format")
    schema = json_schema_grammar({"type": "object"}, "response_format")
    check_grammar(HARMONY.answer_grammar(schema, **kwargs), "response_format")


@pytest.fixture(scope="module")
def vocabulary():
    """A small byte-level BPE vocabulary with the markers as special tokens, as GPT-OSS's."""
    llguidance_hf = pytest.importorskip("llguidance.hf")
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    bpe = tokenizers.ByteLevelBPETokenizer()
    corpus = [output for output, _ in GOLDEN.values()]
    bpe.train_from_iterator(corpus * 5, vocab_size=400, special_tokens=["</s>", *MARKERS])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="</s>"
    )
    return tokenizer, llguidance_hf.from_tokenizer(tokenizer)


def accepts(vocabulary, grammar: str, output: str) -> bool:
    from llguidance import LLMatcher

    tokenizer, grammar_tokenizer = vocabulary
    matcher = LLMatcher(grammar_tokenizer, LLMatcher.grammar_from_lark(grammar), log_level=0)
    tokens = tokenizer.encode(output, add_special_tokens=False)
    return matcher.consume_tokens(tokens) and matcher.is_accepting()


def test_the_grammars_accept_the_golden_outputs(vocabulary):
    tokenizer = vocabulary[0]

    def literal(marker: str) -> str:
        return f"<[{tokenizer.convert_tokens_to_ids(marker)}]>"

    def golden(name: str) -> str:
        return GOLDEN[name][0].removesuffix("<|return|>")

    tools = [WEATHER, TIME]
    auto = HARMONY.grammar(tools, required=False, parallel=False, literal=literal)
    required = HARMONY.grammar(tools, required=True, parallel=False, literal=literal)
    parallel = HARMONY.grammar(tools, required=True, parallel=True, literal=literal)
    assert accepts(vocabulary, auto, golden("reasoning then final"))
    assert accepts(vocabulary, auto, golden("reasoning then a call"))
    assert accepts(vocabulary, required, golden("reasoning then a call"))
    assert not accepts(vocabulary, required, golden("reasoning then final"))
    assert not accepts(vocabulary, required, golden("two calls"))
    # One call per answer, parallel or not: the template shows only an assistant turn's first.
    assert not accepts(vocabulary, parallel, golden("two calls"))
    answer = HARMONY.answer_grammar(None, literal)
    assert accepts(vocabulary, answer, golden("reasoning then final"))
    schema = json_schema_grammar({"type": "object"}, "response_format")
    structured = HARMONY.answer_grammar(schema, literal)
    assert accepts(
        vocabulary, structured, THINK + '<|start|>assistant<|channel|>final<|message|>{"a": 1}'
    )
    assert not accepts(vocabulary, structured, golden("reasoning then final"))


def test_the_request_reasoning_effort_reaches_the_template():
    from common.turns import ChatTurn
    from layers.chat_template import ChatTemplate

    path = Path(__file__).parent.parent / "templates" / "families" / "openai-gpt-oss-120b.jinja"
    chat = ChatTemplate(path.read_text(), "<|startoftext|>", "<|return|>", add_bos=False)
    turns = [ChatTurn("user", "Hi")]
    assert "Reasoning: medium" in chat.text(turns)  # the template's default
    assert "Reasoning: high" in chat.text(turns, effort="high")
    assert "Reasoning: low" in chat.text(turns, effort="minimal")
    assert "Reasoning: high" in chat.text(turns, effort="xhigh")
