"""Tool-call formats of real model families, as llama.cpp's test-chat checks them: detection
from each family's chat template, the template's own rendering of a call matching the format,
and each format's grammar and streaming parser on the family's canonical output (no weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.turns import ChatTurn, ToolCall, ToolSpec
from layers import tool_formats
from layers.chat_template import ChatTemplate
from layers.tool_formats import json_calls
from tests.unit.format_checks import every_cut
from tests.unit.grammar_check import accepts, literal_for

FAMILIES = Path(__file__).parent.parent / "templates" / "families"
WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec("get_time", None, {"type": "object", "properties": {}})
DETECTED = {
    "meta-llama-Llama-3.1-8B-Instruct.jinja": "llama3",
    "meta-llama-Llama-3.2-3B-Instruct.jinja": "llama3",
    "meta-llama-Llama-3.3-70B-Instruct.jinja": "llama3",
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": "mistral-nemo",
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": "mistral",
    "unsloth-mistral-Devstral-Small-2507.jinja": "devstral",
    "Qwen-Qwen2.5-7B-Instruct.jinja": "hermes",
    "Qwen-Qwen3-0.6B.jinja": "hermes",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": "hermes",
    "Qwen3-Coder.jinja": "qwen3-coder",
    "openai-gpt-oss-120b.jinja": "harmony",
    "llama-cpp-deepseek-r1.jinja": "deepseek-r1",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": "deepseek-r1",
    "deepseek-ai-DeepSeek-V3.1.jinja": "deepseek-v3",
    "meetkai-functionary-medium-v3.1.jinja": "functionary-v3.1",
    "meetkai-functionary-medium-v3.2.jinja": "functionary-v3.2",
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja": "command-r7b",
    "ibm-granite-granite-3.3-2B-Instruct.jinja": "granite",
    "moonshotai-Kimi-K2.jinja": "kimi-k2",
    "LFM2-8B-A1B.jinja": "lfm2",
    "HuggingFaceTB-SmolLM3-3B.jinja": None,
}
# The JSON families whose templates write calls themselves, and the format they write.
RENDERED = {
    "meta-llama-Llama-3.1-8B-Instruct.jinja": json_calls.LLAMA3,
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": json_calls.MISTRAL_NEMO,
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": json_calls.MISTRAL,
    "unsloth-mistral-Devstral-Small-2507.jinja": json_calls.DEVSTRAL,
    "Qwen-Qwen2.5-7B-Instruct.jinja": json_calls.HERMES,
    "llama-cpp-deepseek-r1.jinja": json_calls.DEEPSEEK_R1,
    "deepseek-ai-DeepSeek-V3.1.jinja": json_calls.DEEPSEEK_V3,
    "meetkai-functionary-medium-v3.1.jinja": json_calls.FUNCTIONARY_V31,
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja": json_calls.COMMAND_R7B,
    "moonshotai-Kimi-K2.jinja": json_calls.KIMI_K2,
}
CALL = ToolCall("call_abc123", "get_weather", '{"city": "Paris"}')


def template(name: str) -> str:
    return (FAMILIES / name).read_text()


def conversation(call: ToolCall) -> list[ChatTurn]:
    return [
        ChatTurn("user", "Weather in Paris?"),
        ChatTurn("assistant", "", (call,)),
        ChatTurn("tool", "sunny", tool_call_id=call.id, name=call.name),
        ChatTurn("assistant", "It is sunny."),
        ChatTurn("user", "Thanks!"),
    ]


def parse(fmt, pieces):
    parser = fmt.parser([WEATHER, TIME])
    events = [e for piece in pieces for e in parser.feed(piece)] + list(parser.finish())
    content = "".join(e.text for e in events if isinstance(e, tool_formats.Text))
    calls: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, tool_formats.CallStarted):
            assert e.index not in calls  # a call starts once
            calls[e.index] = [e.name, ""]
        elif isinstance(e, tool_formats.Arguments):
            calls[e.index][1] += e.text
    return content, [(n, json.loads(a)) for n, a in (calls[i] for i in sorted(calls))]


@pytest.mark.parametrize("name", sorted(DETECTED))
def test_each_family_is_detected_from_its_template(name):
    assert tool_formats.detect(template(name)) == DETECTED[name]


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_the_template_writes_a_call_as_the_format_does(name):
    fmt = RENDERED[name]
    chat = ChatTemplate(template(name), "<s>", "</s>", add_bos=False)
    assert chat.tool_format is fmt
    rendered = chat.text(conversation(CALL), [WEATHER])
    written = fmt.render_calls([ToolCall(fmt.template_id(CALL.id), CALL.name, CALL.arguments)])
    assert written in rendered


@pytest.mark.parametrize("fmt", json_calls.FORMATS, ids=lambda f: f.name)
def test_the_parser_reads_calls_however_the_stream_is_cut(fmt):
    calls = [CALL, ToolCall("c2", "get_time", "{}")]
    if fmt.single_call:
        calls = calls[:1]
    output = "Let me check. " + fmt.render_calls(calls)
    expected = [(c.name, json.loads(c.arguments)) for c in calls]
    for pieces in every_cut(output):
        assert parse(fmt, pieces) == ("Let me check. ", expected), pieces


@pytest.mark.parametrize("fmt", json_calls.FORMATS, ids=lambda f: f.name)
def test_the_grammar_accepts_the_canonical_output_and_nothing_off_format(fmt):
    literal = literal_for(fmt.markers)
    calls = [CALL, ToolCall("c2", "get_time", "{}")]
    one = fmt.render_calls(calls[:1])
    two = fmt.render_calls(calls)
    for required in (True, False):
        grammar = fmt.grammar([WEATHER, TIME], required, parallel=True, literal=literal)
        assert accepts(grammar, one, fmt.markers)
        assert accepts(grammar, two, fmt.markers) != fmt.single_call
        assert not accepts(grammar, one.replace("Paris", "Paris\\u"), fmt.markers)
        assert not accepts(grammar, one.replace("get_weather", "get_wetter"), fmt.markers)
        assert accepts(grammar, "Let me check. " + one, fmt.markers) != required
        assert accepts(grammar, "Just text.", fmt.markers) != required
    single = fmt.grammar([WEATHER, TIME], True, parallel=False, literal=literal)
    assert accepts(single, one, fmt.markers) and not accepts(single, two, fmt.markers)
    # Text never holds a trigger: free text cannot pass for a call, nor a call for text.
    auto = fmt.grammar([WEATHER], False, parallel=True, literal=literal)
    assert not accepts(auto, f"a {fmt.triggers[0]} b", fmt.markers)


def test_text_that_only_looks_like_a_trigger_is_text():
    content, calls = parse(json_calls.HERMES, ["a <tool", "_ca", "ll is not here: <tool_cal"])
    assert content == "a <tool_call is not here: <tool_cal" and calls == []


def test_arguments_stream_before_the_call_ends():
    parser = json_calls.HERMES.parser()
    events = list(parser.feed('<tool_call>\n{"name": "get_weather", "arguments": {"ci'))
    assert events == [tool_formats.CallStarted(0, "get_weather"), tool_formats.Arguments(0, '{"ci')]


def test_mistral_ids_are_nine_alphanumerics_and_foreign_ids_are_mapped_stably():
    fmt = json_calls.MISTRAL_NEMO
    new = fmt.new_call_id()
    assert new is not None and len(new) == 9 and new.isalnum()
    assert fmt.template_id("call_abc123") == fmt.template_id("call_abc123") != "call_abc123"
    assert len(fmt.template_id("call_abc123")) == 9 and fmt.template_id("abcDEF123") == "abcDEF123"
    assert json_calls.HERMES.new_call_id() is None


def test_command_r7b_response_markers_are_not_content():
    fmt = json_calls.COMMAND_R7B
    output = "<|START_RESPONSE|>Hello there.<|END_RESPONSE|>"
    for pieces in every_cut(output):
        assert parse(fmt, pieces) == ("Hello there.", [])
    grammar = fmt.grammar([WEATHER], False, True, literal_for(fmt.markers))
    assert accepts(grammar, output, fmt.markers)
