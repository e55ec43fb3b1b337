"""What a conversation asks of generation beyond sampling: the turns, the tools offered, and the
grammar the answer must follow (tools, JSON mode or a JSON schema).

Each dialect turns its own fields into these pieces (`ChatPlan` through `make_plan`); every tool,
tool-choice and output-format rule is checked here, each failure a 400 naming the dialect's
`param`, before a model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from common.errors import InvalidRequest
from common.image_input import check_text
from common.protocol.chat import (
    ChatCompletionRequest,
    ChatMessage,
    FunctionDefinition,
    NamedFunction,
    NamedToolChoice,
)
from common.turns import IMAGE_MARKER, ChatTurn, ImageRef, ToolCall, ToolSpec
from layers import structured

_ROLE_ALIASES = {"developer": "system", "function": "tool"}
# A function without parameters takes none: its arguments are always {}.
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class NamedChoice:
    """A tool choice that names the one function to call."""

    name: str


ToolChoice = Literal["none", "auto", "required"] | NamedChoice | None
OutputFormat = Literal["text", "json_object", "json_schema"]


@dataclass(frozen=True)
class ChatPlan:
    turns: list[ChatTurn]
    tools: list[ToolSpec]  # described in the prompt
    mode: Literal["none", "auto", "required"]
    # The answer's grammar when it is JSON (response_format); a tool grammar is the model's
    # format's (layers/tool_formats), built once the model is known.
    grammar: str | None
    legacy_functions: bool = False  # answer with `function_call`, as the deprecated API does
    single_call: bool = False  # a named tool choice, or calls not parallel: one call at most


def make_plan(
    turns: list[ChatTurn],
    tools: list[ToolSpec],
    choice: ToolChoice,
    parallel: bool,
    output: tuple[OutputFormat, Mapping[str, Any] | None] = ("text", None),
    *,
    choice_param: str = "tool_choice",
    format_param: str = "response_format",
    schema_param: str = "response_format.json_schema.schema",
    legacy: bool = False,
) -> ChatPlan:
    """The plan of any dialect: its turns, tools (checked, unique), tool choice and output
    format (`text`, `json_object`, or `json_schema` with its schema)."""
    mode, offered = _mode(choice, tools, choice_param)
    if mode != "none":
        if output[0] != "text":
            raise InvalidRequest(
                f"{format_param} cannot be combined with tools the model may call; use a "
                "function's parameters for the answer's shape.",
                param=format_param,
            )
        single = isinstance(choice, NamedChoice) or not parallel
        return ChatPlan(turns, offered, mode, None, legacy, single)
    return ChatPlan(turns, [], "none", output_grammar(*output, schema_param), legacy)


def chat_plan(request: ChatCompletionRequest) -> ChatPlan:
    """Chat Completions' fields (tools or the deprecated functions) as a plan."""
    legacy = request.functions is not None or request.function_call is not None
    if legacy and (request.tools is not None or request.tool_choice is not None):
        raise InvalidRequest(
            "Send either tools and tool_choice or the deprecated functions and function_call, "
            "not both.",
            param="functions" if request.functions is not None else "function_call",
        )
    if legacy:
        definitions = list(request.functions or [])
        choice: Any = request.function_call
        prefix, choice_param = "functions", "function_call"
    else:
        definitions = [tool.function for tool in request.tools or []]
        choice = request.tool_choice
        prefix, choice_param = "tools", "tool_choice"
    params = [f"{prefix}[{i}]" + ("" if legacy else ".function") for i in range(len(definitions))]
    tools = [_definition_spec(d, p) for d, p in zip(definitions, params, strict=True)]
    check_unique(tools, [f"{p}.name" for p in params])
    if isinstance(choice, NamedToolChoice):
        choice = NamedChoice(choice.function.name)
    elif isinstance(choice, NamedFunction):
        choice = NamedChoice(choice.name)
    response_format = request.response_format
    output: tuple[OutputFormat, Mapping[str, Any] | None] = ("text", None)
    if response_format is not None and response_format.type == "json_object":
        output = ("json_object", None)
    elif response_format is not None and response_format.type == "json_schema":
        assert response_format.json_schema is not None
        output = ("json_schema", response_format.json_schema.json_schema)
    return make_plan(
        chat_turns(request.messages),
        tools,
        choice,
        parallel=request.parallel_tool_calls is not False and not legacy,
        output=output,
        choice_param=choice_param,
        legacy=legacy,
    )


def _definition_spec(definition: FunctionDefinition, param: str) -> ToolSpec:
    return tool_spec(definition.name, definition.description, definition.parameters, param)


def tool_spec(
    name: str,
    description: str | None,
    parameters: Mapping[str, Any] | None,
    param: str,
    schema_field: str = "parameters",  # the dialect's name for it (Anthropic: input_schema)
) -> ToolSpec:
    """A function offered to the model; its parameters a JSON schema of an object that the
    grammar can enforce (a 400 naming `param`.`schema_field` otherwise)."""
    where = f"{param}.{schema_field}"
    if parameters is None or parameters == {}:
        parameters = NO_PARAMETERS
    elif parameters.get("type", "object") != "object":
        raise InvalidRequest(
            f"A function's {schema_field} must be a JSON schema of type 'object'.", param=where
        )
    else:
        parameters = {"type": "object", **parameters}
    structured.check_schema(parameters, where)
    return ToolSpec(name, description, parameters)


def check_unique(tools: Sequence[ToolSpec], name_params: Sequence[str]) -> None:
    seen: set[str] = set()
    for tool, param in zip(tools, name_params, strict=True):
        if tool.name in seen:
            raise InvalidRequest(
                f"Two tools are named '{tool.name}'; names must be unique.", param=param
            )
        seen.add(tool.name)


def _mode(choice: ToolChoice, tools: list[ToolSpec], param: str) -> tuple[str, list[ToolSpec]]:
    if isinstance(choice, NamedChoice):
        named = [t for t in tools if t.name == choice.name]
        if not named:
            raise InvalidRequest(
                f"{param} names the function '{choice.name}', which is not among the "
                "tools of this request.",
                param=param,
            )
        return "required", named
    if choice == "required" and not tools:
        raise InvalidRequest(f"{param} 'required' needs at least one tool.", param=param)
    if not tools or choice == "none":
        return "none", []
    return ("required" if choice == "required" else "auto"), tools


def output_grammar(
    kind: OutputFormat, schema: Mapping[str, Any] | None, schema_param: str
) -> str | None:
    """The grammar of a JSON answer (None for text)."""
    if kind == "text":
        return None
    if kind == "json_object" or schema is None:
        schema = structured.ANY_OBJECT  # OpenAI: no schema means any JSON object
    return structured.json_schema_grammar(schema, schema_param)


def chat_turns(messages: list[ChatMessage]) -> list[ChatTurn]:
    """Messages as turns; a part a text model cannot read, or a tool result answering no
    call made before it, is a 400."""
    turns = []
    calls: dict[str, str] = {}  # id -> function name, of the calls made so far
    for i, message in enumerate(messages):
        content, images = _content(message, i)
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
            name = answered_call(calls, call_id, f"messages[{i}].tool_call_id")
        elif message.role == "function":  # legacy: answers the call of that name
            if not name:
                raise InvalidRequest(
                    "A function message needs the name of the function it answers.",
                    param=f"messages[{i}].name",
                )
            call_id = name
        thought = (
            (message.reasoning_content or message.reasoning or "") if role == "assistant" else ""
        )
        turns.append(ChatTurn(role, content, tuple(made), call_id, name, thought, images))
    return turns


def answered_call(calls: Mapping[str, str], call_id: str, param: str) -> str:
    """The name of the function a tool result answers, or a 400 if it answers no call made
    earlier in the conversation."""
    if call_id not in calls:
        raise InvalidRequest(
            f"{param} '{call_id}' answers no tool call made earlier in the conversation.",
            param=param,
        )
    return calls[call_id]


def _content(message: ChatMessage, i: int) -> tuple[str, tuple[ImageRef, ...]]:
    """A message's text, with a marker where each of its images is, and the images."""
    content = message.content
    if not isinstance(content, list):
        text = content or ""
        check_text(text, f"messages[{i}].content")
        return text, ()
    texts: list[str] = []
    images: list[ImageRef] = []
    for j, part in enumerate(content):
        param = f"messages[{i}].content[{j}]"
        if part.type in ("text", "input_text"):
            check_text(part.text or "", f"{param}.text")
            texts.append(part.text or "")
        elif part.type == "image_url" and part.image_url is not None:
            images.append(image_ref(message.role, part.image_url.url, part.image_url.detail, param))
            texts.append(IMAGE_MARKER)
        else:
            raise InvalidRequest(
                f"Content parts of type '{part.type}' are not supported: send text and "
                "image_url parts.",
                param=f"{param}.type",
            )
    return "".join(texts), tuple(images)


def image_ref(role: str, url: str, detail: str | None, param: str) -> ImageRef:
    """An image a message holds; images are read in user messages only (as OpenAI's)."""
    if role != "user":
        raise InvalidRequest(
            f"Images are read in user messages only, not in {role} messages.", param=param
        )
    return ImageRef(url, detail or "auto", param)
