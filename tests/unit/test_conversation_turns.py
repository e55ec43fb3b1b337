"""The turn-building rules the three dialects share (handlers/text/conversation/turns.py), and
where they must differ, each dialect's own: how a turn's text parts are joined."""

from __future__ import annotations

import pytest

from common.errors import InvalidRequest
from common.protocol import parse_request
from common.protocol.chat import ChatCompletionRequest
from common.protocol.messages import MessageCountTokensRequest
from common.turns import IMAGE_MARKER, ChatTurn, ToolCall
from handlers.text.chat import chat_turns
from handlers.text.conversation.turns import AS_SENT, BLANK_LINE, Calls, Content
from handlers.text.messages import message_turns
from handlers.text.responses.items import normalise, turns_of

PIXEL = "data:image/png;base64,iVBORw0KGgo="
PARTS = ["Look", "at this"]


def test_content_keeps_the_order_of_texts_and_images_and_joins_as_the_dialect_does():
    for separator, joined in ((AS_SENT, f"Look{IMAGE_MARKER}at this"),
                              (BLANK_LINE, f"Look\n\n{IMAGE_MARKER}\n\nat this")):  # fmt: skip
        content = Content("user", separator)
        content.text("Look", "p0")
        content.image(PIXEL, None, "p1")
        content.text("at this", "p2")
        assert content.joined == joined
        assert [image.param for image in content.images] == ["p1"]


def test_each_dialect_joins_its_text_parts_its_own_way():
    chat = parse_request(ChatCompletionRequest, {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": t} for t in PARTS]}],
    })  # fmt: skip
    messages = parse_request(MessageCountTokensRequest, {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": t} for t in PARTS]}],
    })  # fmt: skip
    items = normalise(
        [{"role": "user", "content": [{"type": "input_text", "text": t} for t in PARTS]}],
        unseal=str,
    )
    # Chat Completions and Responses concatenate the parts as sent; Messages puts a blank line
    # between its text blocks.
    assert chat_turns(chat.messages) == [ChatTurn("user", "Lookat this")]
    assert turns_of(items, None, 0) == [ChatTurn("user", "Lookat this")]
    assert message_turns(messages) == [ChatTurn("user", "Look\n\nat this")]


def test_a_result_answers_only_a_call_made_before_it():
    calls = Calls()
    with pytest.raises(InvalidRequest) as early:
        calls.answered("call_1", "messages[1].tool_call_id")
    assert early.value.param == "messages[1].tool_call_id" and "call_1" in early.value.message
    calls.made(ToolCall("call_1", "get_weather", "{}"))
    assert calls.answered("call_1", "messages[2].tool_call_id") == "get_weather"


def test_images_are_read_in_user_turns_only():
    content = Content("assistant", AS_SENT)
    with pytest.raises(InvalidRequest, match="user messages only") as refused:
        content.image(PIXEL, "low", "messages[1].content[0]")
    assert refused.value.param == "messages[1].content[0]"


def test_a_call_cut_mid_arguments_is_left_out_of_a_whole_chat_and_kept_partial_in_messages():
    from handlers.text.conversation.answer import LEFT_OUT, PARTIAL_INPUT, whole_arguments

    whole, cut = '{"city": "Paris"}', '{"city": "Par'
    for policy in (LEFT_OUT, PARTIAL_INPUT):
        assert whole_arguments(whole, policy) == {"city": "Paris"}
        assert whole_arguments("", policy) == (None if policy == LEFT_OUT else {})
    # Chat Completions lists only calls a client can make; Messages keeps the input it had.
    assert whole_arguments(cut, LEFT_OUT) is None
    assert whole_arguments(cut, PARTIAL_INPUT) == {"city": "Par"}
