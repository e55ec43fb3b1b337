"""Anthropic's Messages API requests on the fake engine: turns from blocks (tool use and results,
thinking left out, system messages), what is refused by name, tools and tool choices."""

from __future__ import annotations

import pytest

from common.errors import InvalidRequest
from common.protocol import parse_request
from common.protocol.messages import MessageCountTokensRequest, MessageCreateRequest
from common.turns import ChatTurn, ToolCall
from handlers.text.messages import message_plan, message_turns
from tests.unit.anthropic_requests import HELLO, WEATHER, refused, request

# The conversation


def test_system_blocks_tool_use_and_tool_results_become_turns():
    body = request(
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Use tools."}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me see.", "signature": "c2ln"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather",
                 "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "rain"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "no such city"}]},
                {"type": "text", "text": "And tomorrow?", "cache_control": {"type": "ephemeral"}},
            ]},
        ],
    )  # fmt: skip
    assert message_turns(body) == [
        ChatTurn("system", "Be brief.\n\nUse tools."),
        ChatTurn("user", "weather?"),
        ChatTurn(
            "assistant",
            "Checking.",  # the thinking is left out
            (
                ToolCall("toolu_1", "get_weather", '{"city": "Oslo"}'),
                ToolCall("toolu_2", "get_weather", '{"city": "Rome"}'),
            ),
        ),
        ChatTurn("tool", "rain", (), "toolu_1", "get_weather"),
        ChatTurn("tool", "Error: no such city", (), "toolu_2", "get_weather"),
        ChatTurn("user", "And tomorrow?"),
    ]


def test_an_assistant_message_of_thinking_alone_is_left_out():
    body = request(
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [{"type": "thinking", "thinking": "hm", "signature": ""}],
            },
            {"role": "user", "content": "well?"},
        ],
        system="Be brief.",
    )
    assert [turn.role for turn in message_turns(body)] == ["system", "user", "user"]


@pytest.mark.parametrize(
    ("messages", "param", "text"),
    [
        ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9",
                                        "content": "x"}]}],
         "messages[0].content[0].tool_use_id", "answers no tool call"),
        ([{"role": "user", "content": [{"type": "text", "text": "see"},
                                       {"type": "image", "source": {"type": "base64"}}]}],
         "messages[0].content[1].source.media_type", "required"),
        ([{"role": "assistant", "content": [{"type": "image", "source": {
            "type": "url", "url": "https://example.com/a.png"}}]}],
         "messages[0].content[0]", "user messages only"),
        ([{"role": "user", "content": [{"type": "document", "source": {}}]}],
         "messages[0].content[0].type", "not supported"),
        ([{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                             "input": {}}]},
          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                        "content": [{"type": "image", "source": {}}]}]}],
         "messages[1].content[0].content[0].type", "not supported"),
        ([{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                        "input": {}}]}],
         "messages[0].content[0].type", "belongs in an assistant message"),
    ],
)  # fmt: skip
def test_blocks_a_text_model_cannot_take_are_refused_by_name(messages, param, text):
    error = refused(messages=messages)
    assert error.param == param and text in error.message


def test_missing_fields_and_hosted_features_are_refused_by_name():
    cases = [
        ({"max_tokens": None}, "max_tokens"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"temperature": 1.5}, "temperature"),
        ({"mcp_servers": [{"type": "url", "url": "https://x"}]}, "mcp_servers"),
        ({"container": "container_1"}, "container"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]},
         "messages[0].content[0]"),
        ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
        ({"stop_sequences": [""]}, "stop_sequences[0]"),
    ]  # fmt: skip
    for fields, param in cases:
        body = {"model": "gpt-4", "max_tokens": 10, "messages": HELLO, **fields}
        body = {k: v for k, v in body.items() if v is not None}
        with pytest.raises(InvalidRequest) as caught:
            parse_request(MessageCreateRequest, body)
        assert caught.value.param == param, fields
    # Accepted as Claude Code sends them: empty hosted features, thinking, effort, metadata.
    request(
        thinking={"type": "adaptive", "display": "omitted"},
        output_config={"effort": "high"},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        metadata={"user_id": "user_abc"},
        mcp_servers=[],
        service_tier="auto",
    )
    request(thinking={"type": "enabled", "budget_tokens": 2048})
    request(thinking={"type": "disabled"})


# Tools


def test_custom_tools_are_offered_and_server_tools_skipped(caplog):
    tools = [{"type": "bash_20250124", "name": "bash"}, WEATHER,
             {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
             {"type": "custom", **WEATHER, "name": "other"}]  # fmt: skip
    with caplog.at_level("INFO", logger="stratus.messages"):
        plan = message_plan(request(tools=tools))
    assert [tool.name for tool in plan.tools] == ["get_weather", "other"]
    assert plan.mode == "auto" and not plan.single_call
    assert "bash_20250124" in caplog.text and "web_search_20250305" in caplog.text


@pytest.mark.parametrize(
    ("choice", "mode", "names", "single"),
    [
        ({"type": "auto"}, "auto", ["get_weather", "other"], False),
        ({"type": "any"}, "required", ["get_weather", "other"], False),
        ({"type": "any", "disable_parallel_tool_use": True}, "required",
         ["get_weather", "other"], True),
        ({"type": "tool", "name": "other"}, "required", ["other"], True),
        ({"type": "none"}, "none", [], False),
    ],
)  # fmt: skip
def test_tool_choice_maps_onto_the_plan(choice, mode, names, single):
    plan = message_plan(request(tools=[WEATHER, {**WEATHER, "name": "other"}], tool_choice=choice))
    assert plan.mode == mode
    assert [tool.name for tool in plan.tools] == names
    assert plan.single_call == single


def test_tool_errors_name_anthropic_fields():
    bad_schema = {**WEATHER, "input_schema": {"type": "array"}}
    assert refused(tools=[bad_schema]).param == "tools[0].input_schema"
    assert refused(tools=[WEATHER, WEATHER]).param == "tools[1].name"
    error = refused(tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"})
    assert error.param == "tool_choice"
    assert refused(tool_choice={"type": "any"}).param == "tool_choice"  # no tools


def test_a_system_message_in_the_conversation_is_a_system_turn():
    """Claude Code's mid-conversation-tool-changes beta puts its environment there."""
    from common.protocol import parse_request
    from handlers.text.messages import message_turns

    request = parse_request(
        MessageCountTokensRequest,
        {
            "model": "m",
            "system": "You help.",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "system", "content": [{"type": "text", "text": "cwd: /tmp"}]},
                {"role": "user", "content": "Go"},
            ],
        },
    )
    turns = message_turns(request)
    assert [(t.role, t.content) for t in turns] == [
        ("system", "You help."),
        ("user", "Hi"),
        ("system", "cwd: /tmp"),
        ("user", "Go"),
    ]
