"""The text endpoints' wire output against its recording (tests/wire_golden.py): Chat
Completions, Messages, Responses, legacy completions and edits, at temperature 0, plain and
streamed, with tools, reasoning, structured output, logprobs and refusals. Images are recorded
beside the vision tests (tests/e2e/test_vision.py), on their own server."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import API_KEYS, LiveServer
from tests.wire_golden import check, exchange

OPENAI = {"Authorization": f"Bearer {API_KEYS[0]}"}
ANTHROPIC = {"x-api-key": API_KEYS[0], "anthropic-version": "2023-06-01"}
ASK = [{"role": "user", "content": "What is 2 + 2?"}]
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER_ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CHAT_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather in a city", "parameters": CITY},
}
RESPONSES_TOOL = {
    "type": "function", "name": "get_weather", "description": "The weather in a city",
    "parameters": CITY, "strict": True,
}  # fmt: skip
MESSAGES_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": CITY,
}
ANSWER = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}},
    "required": ["answer"],
    "additionalProperties": False,
}
GREEDY = {"temperature": 0}
CHAT = {"model": "gpt-4", "messages": ASK, "max_tokens": 10, **GREEDY}
MESSAGES = {"model": "gpt-4", "messages": ASK, "max_tokens": 10, **GREEDY}
RESPONSES = {"model": "gpt-4", "input": "What is 2 + 2?", "max_output_tokens": 10, "store": False,
             **GREEDY}  # fmt: skip
THINKING = {"type": "enabled", "budget_tokens": 1024}

# name -> (path, body, headers)
REQUESTS: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    "chat": ("/v1/chat/completions", CHAT, OPENAI),
    "chat streamed": (
        "/v1/chat/completions",
        {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        OPENAI,
    ),
    "chat n=2, stop": ("/v1/chat/completions", {**CHAT, "n": 2, "stop": ["."]}, OPENAI),
    "chat logprobs": (
        "/v1/chat/completions",
        {**CHAT, "max_tokens": 3, "logprobs": True, "top_logprobs": 2},
        OPENAI,
    ),  # fmt: skip
    "chat tool required": (
        "/v1/chat/completions",
        {
            **CHAT,
            "messages": WEATHER_ASK,
            "tools": [CHAT_TOOL],
            "tool_choice": "required",
            "max_tokens": 40,
        },
        OPENAI,
    ),  # fmt: skip
    "chat tool required, streamed": (
        "/v1/chat/completions",
        {
            **CHAT,
            "messages": WEATHER_ASK,
            "tools": [CHAT_TOOL],
            "tool_choice": "required",
            "max_tokens": 40,
            "stream": True,
        },
        OPENAI,
    ),  # fmt: skip
    "chat tool, model's template": (
        "/v1/chat/completions",
        {
            **CHAT,
            "model": "tools-template-chat",
            "messages": WEATHER_ASK,
            "tools": [CHAT_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "max_tokens": 40,
        },
        OPENAI,
    ),  # fmt: skip
    "chat tool result turn": (
        "/v1/chat/completions",
        {
            **CHAT,
            "tools": [CHAT_TOOL],
            "messages": [
                *WEATHER_ASK,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
            ],
        },
        OPENAI,
    ),  # fmt: skip
    "chat json schema": (
        "/v1/chat/completions",
        {
            **CHAT,
            "max_tokens": 20,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": ANSWER},
            },
        },
        OPENAI,
    ),  # fmt: skip
    "chat reasoning": ("/v1/chat/completions", {**CHAT, "model": "r1-chat"}, OPENAI),
    "chat reasoning, streamed": (
        "/v1/chat/completions",
        {**CHAT, "model": "r1-chat", "stream": True},
        OPENAI,
    ),
    "chat invalid field": ("/v1/chat/completions", {**CHAT, "top_logprobs": 30}, OPENAI),
    "chat unsupported part": (
        "/v1/chat/completions",
        {
            **CHAT,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "file", "file": {"file_id": "file-abc123"}}],
                }
            ],
        },
        OPENAI,
    ),  # fmt: skip
    "messages": ("/v1/messages", MESSAGES, ANTHROPIC),
    "messages streamed": ("/v1/messages", {**MESSAGES, "stream": True}, ANTHROPIC),
    "messages system, stop": (
        "/v1/messages",
        {**MESSAGES, "system": "Answer briefly.", "stop_sequences": ["."]},
        ANTHROPIC,
    ),  # fmt: skip
    "messages tool any": (
        "/v1/messages",
        {
            **MESSAGES,
            "messages": WEATHER_ASK,
            "tools": [MESSAGES_TOOL],
            "tool_choice": {"type": "any"},
            "max_tokens": 40,
        },
        ANTHROPIC,
    ),  # fmt: skip
    "messages tool any, streamed": (
        "/v1/messages",
        {
            **MESSAGES,
            "messages": WEATHER_ASK,
            "tools": [MESSAGES_TOOL],
            "tool_choice": {"type": "any"},
            "max_tokens": 40,
            "stream": True,
        },
        ANTHROPIC,
    ),  # fmt: skip
    "messages tool result turn": (
        "/v1/messages",
        {
            **MESSAGES,
            "tools": [MESSAGES_TOOL],
            "messages": [
                *WEATHER_ASK,
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 C"}
                    ],
                },
            ],
        },
        ANTHROPIC,
    ),  # fmt: skip
    "messages thinking": (
        "/v1/messages",
        {**MESSAGES, "model": "r1-chat", "thinking": THINKING},
        ANTHROPIC,
    ),
    "messages thinking, streamed": (
        "/v1/messages",
        {**MESSAGES, "model": "r1-chat", "thinking": THINKING, "stream": True},
        ANTHROPIC,
    ),
    "messages refused field": ("/v1/messages", {**MESSAGES, "container": "x"}, ANTHROPIC),
    "responses": ("/v1/responses", RESPONSES, OPENAI),
    "responses streamed": ("/v1/responses", {**RESPONSES, "stream": True}, OPENAI),
    "responses instructions, messages": (
        "/v1/responses",
        {
            **RESPONSES,
            "instructions": "Answer briefly.",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
        },
        OPENAI,
    ),  # fmt: skip
    "responses tool required": (
        "/v1/responses",
        {
            **RESPONSES,
            "input": "What is the weather in Paris?",
            "tools": [RESPONSES_TOOL],
            "tool_choice": "required",
            "max_output_tokens": 40,
        },
        OPENAI,
    ),  # fmt: skip
    "responses tool required, streamed": (
        "/v1/responses",
        {
            **RESPONSES,
            "input": "What is the weather in Paris?",
            "tools": [RESPONSES_TOOL],
            "tool_choice": "required",
            "max_output_tokens": 40,
            "stream": True,
        },
        OPENAI,
    ),  # fmt: skip
    "responses tool output turn": (
        "/v1/responses",
        {
            **RESPONSES,
            "tools": [RESPONSES_TOOL],
            "input": [
                {"role": "user", "content": "What is the weather in Paris?"},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"city": "Paris"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 21 C"},
            ],
        },
        OPENAI,
    ),  # fmt: skip
    "responses json schema": (
        "/v1/responses",
        {
            **RESPONSES,
            "max_output_tokens": 20,
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "answer",
                    "schema": ANSWER,
                    "strict": True,
                }
            },
        },
        OPENAI,
    ),  # fmt: skip
    "responses reasoning": (
        "/v1/responses",
        {**RESPONSES, "model": "r1-chat", "include": ["reasoning.encrypted_content"]},
        OPENAI,
    ),
    "responses reasoning, streamed": (
        "/v1/responses",
        {**RESPONSES, "model": "r1-chat", "stream": True},
        OPENAI,
    ),
    "responses refused field": ("/v1/responses", {**RESPONSES, "background": True}, OPENAI),
    "completions": (
        "/v1/completions",
        {
            "model": "gpt-3.5-turbo-instruct",
            "prompt": "The capital of France is",
            "max_tokens": 8,
            **GREEDY,
        },
        OPENAI,
    ),  # fmt: skip
    "completions streamed, two prompts": (
        "/v1/completions",
        {
            "model": "gpt-3.5-turbo-instruct",
            "prompt": ["One, two,", "Red, green,"],
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
            **GREEDY,
        },
        OPENAI,
    ),  # fmt: skip
    "completions echo, logprobs": (
        "/v1/completions",
        {
            "model": "gpt-3.5-turbo-instruct",
            "prompt": "The capital of France is",
            "max_tokens": 3,
            "echo": True,
            "logprobs": 2,
            **GREEDY,
        },
        OPENAI,
    ),  # fmt: skip
    "completions invalid field": (
        "/v1/completions",
        {"model": "gpt-3.5-turbo-instruct", "prompt": "x", "logprobs": 9, **GREEDY},
        OPENAI,
    ),  # fmt: skip
    "edits": (
        "/v1/edits",
        {
            "model": "gpt-4",
            "instruction": "Fix the spelling",
            "input": "helo wrld",
            "max_tokens": 6,
            **GREEDY,
        },
        OPENAI,
    ),  # fmt: skip
}


def test_the_text_endpoints_answer_as_recorded(server: LiveServer, http: httpx.Client):
    answers = {
        name: exchange(http, path, body, headers)
        for name, (path, body, headers) in REQUESTS.items()
    }
    check("text_endpoints", answers)
