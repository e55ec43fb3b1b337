"""What a chat request asks of generation beyond sampling: the conversation as turns, the tools
offered, and the grammar the answer must follow (tools, JSON mode or a JSON schema).

Every tool, tool-choice and response-format rule of OpenAI's API is checked here, each failure a
400 naming its `param`, before a model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from common.errors import InvalidRequest
from common.protocol.chat import (
    ChatCompletionRequest,
    ChatMessage,
    FunctionDefinition,
    NamedFunction,
    NamedToolChoice,
)
from layers import structured, tool_calls
from layers.text import ChatTurn, ToolCall, ToolSpec

_ROLE_ALIASES = {"developer": "system", "function": "tool"}
# A function without parameters takes none: its arguments are always {}.
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class ChatPlan:
    turns: list[ChatTurn]
    tools: list[ToolSpec]  # described in the prompt
    mode: Literal["none", "auto", "required"]
    grammar: str | None
    legacy_functions: bool  # answer with `function_call`, as the deprecated API does


def chat_plan(request: ChatCompletionRequest) -> ChatPlan:
    legacy = request.functions is not None or request.function_call is not None
    if legacy and (request.tools is not None or request.tool_choice is not None):
        raise InvalidRequest(
            "Send either tools and tool_choice or the deprecated functions and function_call, "
            "not both.",
            param="functions" if request.functions is not None else "function_call",
        )
    if legacy:
        definitions = list(request.functions or [])
        choice = _legacy_choice(request.function_call)
        prefix, choice_param = "functions", "function_call"
    else:
        definitions = [tool.function for tool in request.tools or []]
        choice = request.tool_choice
        prefix, choice_param = "tools", "tool_choice"
    tools = [
        _tool_spec(d, f"{prefix}[{i}]" + ("" if legacy else ".function"))
        for i, d in enumerate(definitions)
    ]
    _check_unique(tools, prefix)
    turns = chat_turns(request.messages)
    mode, offered = _mode(choice, tools, choice_param)
    grammar = None
    if mode != "none":
        parallel = request.parallel_tool_calls is not False and not legacy
        grammar = tool_calls.grammar(offered, required=mode == "required", parallel=parallel)
        if request.response_format is not None and request.response_format.type != "text":
            raise InvalidRequest(
                "response_format cannot be combined with tools the model may call; use a "
                "function's parameters for the answer's shape.",
                param="response_format",
            )
    else:
        grammar = _response_format_grammar(request)
    return ChatPlan(turns, offered if mode != "none" else [], mode, grammar, legacy)


def _legacy_choice(choice: Any) -> Any:
    if isinstance(choice, NamedFunction):
        return NamedToolChoice(type="function", function=choice)
    return choice


def _tool_spec(definition: FunctionDefinition, param: str) -> ToolSpec:
    parameters = definition.parameters
    if parameters is None or parameters == {}:
        parameters = NO_PARAMETERS
    elif parameters.get("type", "object") != "object":
        raise InvalidRequest(
            "A function's parameters must be a JSON schema of type 'object'.",
            param=f"{param}.parameters",
        )
    else:
        parameters = {"type": "object", **parameters}
    structured.check_schema(parameters, f"{param}.parameters")
    return ToolSpec(definition.name, definition.description, parameters)


def _check_unique(tools: list[ToolSpec], prefix: str) -> None:
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        if tool.name in seen:
            raise InvalidRequest(
                f"Two tools are named '{tool.name}'; names must be unique.",
                param=f"{prefix}[{i}].function.name"
                if prefix == "tools"
                else f"{prefix}[{i}].name",
            )
        seen.add(tool.name)


def _mode(choice: Any, tools: list[ToolSpec], param: str) -> tuple[str, list[ToolSpec]]:
    if isinstance(choice, NamedToolChoice):
        named = [t for t in tools if t.name == choice.function.name]
        if not named:
            raise InvalidRequest(
                f"{param} names the function '{choice.function.name}', which is not among the "
                "tools of this request.",
                param=param,
            )
        return "required", named
    if choice == "required" and not tools:
        raise InvalidRequest(f"{param} 'required' needs at least one tool.", param=param)
    if not tools or choice == "none":
        return "none", []
    return ("required" if choice == "required" else "auto"), tools


def _response_format_grammar(request: ChatCompletionRequest) -> str | None:
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return structured.json_schema_grammar(structured.ANY_OBJECT, "response_format")
    assert response_format.json_schema is not None
    schema = response_format.json_schema.json_schema
    if schema is None:
        schema = structured.ANY_OBJECT  # OpenAI: no schema means any JSON object
    return structured.json_schema_grammar(schema, "response_format.json_schema.schema")


def chat_turns(messages: list[ChatMessage]) -> list[ChatTurn]:
    """Messages as turns; a part a text model cannot read, or a tool result answering no
    call made before it, is a 400."""
    turns = []
    calls: dict[str, str] = {}  # id -> function name, of the calls made so far
    for i, message in enumerate(messages):
        content = _text(message, i)
        role = _ROLE_ALIASES.get(message.role, message.role)
        made: list[ToolCall] = []
        if message.role == "assistant":
            for call in message.tool_calls or []:
                made.append(ToolCall(call.id, call.function.name, call.function.arguments))
            if message.function_call is not None:  # legacy: one call, identified by its name
                function = message.function_call
                made.append(ToolCall(function.name, function.name, function.arguments))
            calls.update((call.id, call.name) for call in made)
        call_id, name = message.tool_call_id, message.name
        if message.role == "tool":
            if call_id is None:
                raise InvalidRequest(
                    "A tool message needs the tool_call_id of the call it answers.",
                    param=f"messages[{i}].tool_call_id",
                )
            if call_id not in calls:
                raise InvalidRequest(
                    f"messages[{i}].tool_call_id '{call_id}' answers no tool call made by an "
                    "earlier assistant message.",
                    param=f"messages[{i}].tool_call_id",
                )
            name = calls[call_id]
        elif message.role == "function":  # legacy: answers the call of that name
            if not name:
                raise InvalidRequest(
                    "A function message needs the name of the function it answers.",
                    param=f"messages[{i}].name",
                )
            call_id = name
        turns.append(ChatTurn(role, content, tuple(made), call_id, name))
    return turns


def _text(message: ChatMessage, i: int) -> str:
    content = message.content
    if not isinstance(content, list):
        return content or ""
    texts = []
    for j, part in enumerate(content):
        if part.type not in ("text", "input_text"):
            raise InvalidRequest(
                f"This model reads text only; content parts of type '{part.type}' are not "
                "supported.",
                param=f"messages[{i}].content[{j}].type",
            )
        texts.append(part.text or "")
    return "".join(texts)
