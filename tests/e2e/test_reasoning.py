"""Reasoning split out of the answer, in every dialect: the embedded weights under DeepSeek R1's
template (which opens the thinking block in the prompt, so everything up to `</think>` is
reasoning) and Qwen3's (which lets the model open it, and closes it at once when thinking is
off). SmolLM2 never closes a block it did not learn: under R1's template all it writes is
reasoning, which is what a real R1 model's first tokens are."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import API_KEYS, LiveServer

HI = [{"role": "user", "content": "What is 2 + 2?"}]
MARKERS = ("<think>", "</think>")


def test_r1_thinking_is_reasoning_content_not_content(client: openai.OpenAI):
    reply = client.chat.completions.create(
        model="r1-chat", messages=HI, max_tokens=12, temperature=0
    )
    message = reply.choices[0].message
    reasoning = message.model_extra["reasoning_content"]
    assert reasoning and "</think>" not in reasoning  # the end marker is never text
    assert not message.content  # the block never closed: no answer yet
    assert reply.usage.completion_tokens == 12


def test_r1_reasoning_streams_as_reasoning_content_deltas(client: openai.OpenAI):
    body = {"model": "r1-chat", "messages": HI, "max_tokens": 12, "temperature": 0}
    whole = client.chat.completions.create(**body).choices[0].message
    chunks = list(client.chat.completions.create(**body, stream=True))
    streamed = "".join(
        c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in chunks if c.choices
    )
    assert streamed == whole.model_extra["reasoning_content"]
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_thinking_off_gives_no_reasoning(client: openai.OpenAI):
    template_off = {"chat_template_kwargs": {"enable_thinking": False}}
    for extra in ({"reasoning_effort": "none"}, {"extra_body": template_off}):
        reply = client.chat.completions.create(
            model="r1-chat", messages=HI, max_tokens=8, temperature=0, **extra
        )
        message = reply.choices[0].message
        assert "reasoning_content" not in (message.model_extra or {})
        assert message.content and not any(marker in message.content for marker in MARKERS)


def test_a_template_that_does_not_open_the_block_answers_as_content(client: openai.OpenAI):
    reply = client.chat.completions.create(
        model="qwen3-chat", messages=HI, max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.content


def test_reasoning_sent_back_is_accepted(client: openai.OpenAI):
    reply = client.chat.completions.create(
        model="qwen3-chat",
        messages=[*HI, {"role": "assistant", "content": "4", "reasoning_content": "2 and 2."},
                  {"role": "user", "content": "And 3 + 3?"}],
        max_tokens=4,
        temperature=0,
    )  # fmt: skip
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_responses_give_a_reasoning_item_sealed_for_the_caller(client: openai.OpenAI):
    first = client.responses.create(
        model="r1-chat", input="What is 2 + 2?", max_output_tokens=10, temperature=0,
        include=["reasoning.encrypted_content"], store=False,
    )  # fmt: skip
    [item] = first.output
    assert item.type == "reasoning" and item.content[0].text and item.encrypted_content
    again = client.responses.create(
        model="r1-chat", store=False, max_output_tokens=4, temperature=0,
        input=[{"role": "user", "content": "What is 2 + 2?"}, item.model_dump(exclude_none=True),
               {"role": "user", "content": "Sure?"}],
    )  # fmt: skip
    assert again.status in ("completed", "incomplete")
    off = client.responses.create(
        model="r1-chat", input="Hi", max_output_tokens=6, temperature=0, store=False,
        reasoning={"effort": "none"},
    )  # fmt: skip
    assert [item.type for item in off.output] == ["message"]


def test_messages_give_a_thinking_block(server: LiveServer):
    headers = {"x-api-key": API_KEYS[0], "anthropic-version": "2023-06-01"}
    body = {"model": "r1-chat", "max_tokens": 10, "messages": HI, "temperature": 0}
    answer = httpx.post(f"{server.url}/v1/messages", json=body, headers=headers, timeout=60)
    blocks = answer.json()["content"]
    assert [block["type"] for block in blocks] == ["thinking"] and blocks[0]["thinking"]
    with httpx.stream(
        "POST", f"{server.url}/v1/messages", json={**body, "stream": True}, headers=headers,
        timeout=60,
    ) as streamed:  # fmt: skip
        events = [json.loads(line[6:]) for line in streamed.iter_lines() if line[:6] == "data: "]
    deltas = [e["delta"]["type"] for e in events if e["type"] == "content_block_delta"]
    assert deltas[0] == "thinking_delta" and deltas[-1] == "signature_delta"
    off = httpx.post(
        f"{server.url}/v1/messages", json={**body, "thinking": {"type": "disabled"}},
        headers=headers, timeout=60,
    )  # fmt: skip
    assert [block["type"] for block in off.json()["content"]] == ["text"]
    hidden = {**body, "thinking": {"type": "adaptive", "display": "omitted"}}
    omitted = httpx.post(f"{server.url}/v1/messages", json=hidden, headers=headers, timeout=60)
    [block] = omitted.json()["content"]
    assert block["type"] == "thinking" and block["thinking"] == "" and block["signature"]


def test_thinking_handed_back_must_carry_its_signature(server: LiveServer):
    """Thinking blocks are signed for the caller's key (issue 38, item 6): handed back as given
    (the SDK's round trip), they pass; altered, unsigned, another key's or redacted, a 400 in
    Anthropic's envelope naming the block."""
    import anthropic

    def claude(key: str = API_KEYS[0]) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0, timeout=60)

    ask = {"model": "r1-chat", "max_tokens": 10, "extra_body": {"temperature": 0}}
    first = claude().messages.create(messages=HI, **ask)
    [block] = first.content
    assert block.type == "thinking" and block.signature and block.thinking

    def again(assistant: list, key: str = API_KEYS[0]):
        turns = [
            *HI,
            {"role": "assistant", "content": assistant},
            {"role": "user", "content": "Go on."},
        ]
        return claude(key).messages.create(messages=turns, **ask)

    assert again(first.content).content  # as given: accepted
    with claude().messages.stream(messages=HI, **ask) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].signature and again(streamed.content).content
    given = block.model_dump()
    for altered, key in (
        ({**given, "thinking": given["thinking"] + " (edited)"}, API_KEYS[0]),
        ({**given, "signature": ""}, API_KEYS[0]),
        ({**given, "signature": given["signature"][:-4] + "AAA="}, API_KEYS[0]),
        (given, API_KEYS[1]),  # another key's
        ({"type": "redacted_thinking", "data": "abc"}, API_KEYS[0]),
    ):
        with pytest.raises(anthropic.BadRequestError) as refused:
            again([altered], key)
        error = refused.value.body
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert "messages[1].content[0]" in error["error"]["message"], error


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_a_reasoning_budget_ends_the_block_and_the_answer_follows(client: openai.OpenAI):
    """R1's template opens the block and SmolLM2 never closes it: the budget of
    reasoning_effort "minimal" (128 tokens) forces `</think>`, then comes the answer."""
    reply = client.chat.completions.create(
        model="r1-chat", messages=HI, reasoning_effort="minimal", max_tokens=150, temperature=0
    )
    message = reply.choices[0].message
    assert message.model_extra["reasoning_content"] and "</think>" not in message.content
    assert message.content  # the block was closed: an answer began
    unbounded = client.chat.completions.create(
        model="r1-chat", messages=HI, max_tokens=150, temperature=0
    )
    assert not unbounded.choices[0].message.content  # without a budget it thinks on


def test_a_call_comes_after_the_block(client: openai.OpenAI):
    reply = client.chat.completions.create(
        model="r1-chat", messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER], tool_choice="required", parallel_tool_calls=False,
        reasoning_effort="minimal", max_tokens=200, temperature=0,
    )  # fmt: skip
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"]
    assert not choice.message.content


def test_a_forced_answer_fits_a_budget_the_thinking_would_fill(client: openai.OpenAI):
    """R1's template, no effort and a small budget: SmolLM2 would think to its end. The block is
    ended early enough for the forced call (issue 38, item 8), and JSON likewise. (R1's call
    markers are text in SmolLM2's vocabulary, ~15 tokens each: the shortest call is 90 tokens
    here, where R1's own vocabulary spells it in some 15.)"""
    reply = client.chat.completions.create(
        model="r1-chat", messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER], tool_choice="required", max_tokens=160, temperature=0,
    )  # fmt: skip
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.model_extra["reasoning_content"]
    [call] = choice.message.tool_calls
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    assert reply.usage.completion_tokens < 160
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    reply = client.chat.completions.create(
        model="r1-chat", messages=HI, max_tokens=64, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )  # fmt: skip
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice
    assert isinstance(json.loads(choice.message.content)["answer"], int)
