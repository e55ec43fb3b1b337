"""Tools shown to a template that cannot show them: the system prompt and plain turns, in the
model's own call format."""

from __future__ import annotations

from common.turns import ChatTurn, ToolCall, ToolSpec
from layers import tool_prompt
from layers.tool_formats.json_calls import DEEPSEEK_R1, HERMES

WEATHER = ToolSpec(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec("get_time", None, {"type": "object", "properties": {}})
TURNS = [
    ChatTurn("user", "Weather?"),
    ChatTurn("assistant", "", (ToolCall("c1", "get_weather", '{"city": "Oslo"}'),)),
    ChatTurn("tool", "rain", tool_call_id="c1", name="get_weather"),
    ChatTurn("tool", "cold", tool_call_id="c1", name="get_weather"),
]


def test_a_template_without_tools_sees_calls_and_results_as_text():
    plain = tool_prompt.as_plain_turns(TURNS, HERMES)
    assert [t.role for t in plain] == ["user", "assistant", "user"]
    assert plain[1].content == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    assert plain[2].content.count("<tool_response>") == 2


def test_calls_are_written_in_the_model_format_and_tool_turns_kept_where_read():
    plain = tool_prompt.as_plain_turns(TURNS, DEEPSEEK_R1, tool_role=True)
    assert [t.role for t in plain] == ["user", "assistant", "tool", "tool"]
    assert plain[1].content.startswith("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function")


def test_the_system_prompt_lists_every_tool_and_shows_the_format():
    prompt = tool_prompt.system_prompt([WEATHER, TIME], HERMES)
    assert '"name": "get_weather"' in prompt and '"name": "get_time"' in prompt
    assert "<tool_call>" in prompt
    assert "<｜tool▁sep｜>" in tool_prompt.system_prompt([WEATHER], DEEPSEEK_R1)
