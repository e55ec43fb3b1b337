"""What a conversation asks of generation beyond sampling: the turns, the tools offered, and the
grammar the answer must follow (tools, JSON mode or a JSON schema).

Each dialect parses its own fields (handlers/text/chat.py, messages.py, responses/items.py) and
hands the pieces to `make_plan`; every tool, tool-choice and output-format rule is checked here,
each failure a 400 naming the dialect's `param`, before a model is loaded. Nothing here knows a
dialect's request types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from common.errors import InvalidRequest
from common.turns import ChatTurn, ToolSpec
from layers import structured

# A function without parameters takes none: its arguments are always {}.
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class NamedChoice:
    """A tool choice that names the one function to call."""

    name: str


ToolChoice = Literal["none", "auto", "required"] | NamedChoice | None
OutputFormat = Literal["text", "json_object", "json_schema"]
Output = tuple[OutputFormat, Mapping[str, Any] | None]  # the format, and its schema if it has one


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


def output_format(kind: str | None, schema: Mapping[str, Any] | None) -> Output:
    """A dialect's answer format by its type's name (Chat Completions' response_format.type,
    Responses' text.format.type; Messages' output_config.format is a JSON schema): text, any
    JSON object, or JSON that follows `schema`."""
    if kind == "json_object":
        return ("json_object", None)
    if kind == "json_schema":
        return ("json_schema", schema)
    return ("text", None)


def make_plan(
    turns: list[ChatTurn],
    tools: list[ToolSpec],
    choice: ToolChoice,
    parallel: bool,
    output: Output = ("text", None),
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


@dataclass
class ToolList:
    """The functions a request offers, read one by one (`add`), each checked where it stands;
    `checked` then refuses two of one name, naming the second's `param`."""

    specs: list[ToolSpec] = field(default_factory=list)
    name_params: list[str] = field(default_factory=list)

    def add(
        self,
        name: str,
        description: str | None,
        parameters: Mapping[str, Any] | None,
        param: str,
        schema_field: str = "parameters",
    ) -> ToolSpec:
        spec = tool_spec(name, description, parameters, param, schema_field)
        self.specs.append(spec)
        self.name_params.append(f"{param}.name")
        return spec

    def checked(self) -> list[ToolSpec]:
        seen: set[str] = set()
        for tool, param in zip(self.specs, self.name_params, strict=True):
            if tool.name in seen:
                raise InvalidRequest(
                    f"Two tools are named '{tool.name}'; names must be unique.", param=param
                )
            seen.add(tool.name)
        return self.specs


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
