"""The Responses API's input items and tools, read item by item into a conversation.

Each item is checked where it stands, so a bad one is a 400 naming its place (`input[2].call_id`);
the items are also normalised (ids, statuses, text content) as they are stored and listed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from pydantic import ValidationError

from common.errors import InvalidRequest
from common.image_input import check_text
from common.protocol.base import new_id, parse_request
from common.protocol.chat import AudioFormat
from common.protocol.responses import FunctionTool
from common.sealed import Unsealed
from common.turns import ChatTurn, ToolCall, ToolSpec
from handlers.text.conversation.plan import ToolList
from handlers.text.conversation.turns import (
    AS_SENT,
    Calls,
    Content,
    audio_clip,
    image_ref,
    unsupported,
)

log = logging.getLogger("stratus.responses")

_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
_TEXT_PARTS = {"input_text", "output_text", "text", "refusal", "summary_text"}
# A namespaced function is offered to the model under one name: namespace + this + name.
NAMESPACE_SEPARATOR = "__"


@dataclass
class Tools:
    """The function tools a request offers, and how the model's names map back to them."""

    specs: list[ToolSpec] = field(default_factory=list)
    namespaces: dict[str, tuple[str, str]] = field(default_factory=dict)  # model name -> (ns, name)
    echoed: list[dict[str, Any]] = field(default_factory=list)  # as the response lists them

    def called(self, model_name: str) -> tuple[str | None, str]:
        """(namespace, name) of a function the model called."""
        if model_name in self.namespaces:
            return self.namespaces[model_name]
        return None, model_name


def read_tools(tools: Sequence[Mapping[str, Any]] | None) -> Tools:
    """Function tools and the functions of `namespace` tools; other tool types (web_search,
    local_shell, file_search, mcp, ...) are tools Stratus cannot run: skipped, and logged, so
    that a client offering them still gets its functions."""
    read = Tools()
    offered = ToolList()
    for i, tool in enumerate(tools or []):
        kind = tool.get("type")
        if kind == "function":
            function = _function(tool, f"tools[{i}]")
            offered.add(function.name, function.description, function.parameters, f"tools[{i}]")
            # strict: the grammar enforces every function's parameters, whatever was asked.
            read.echoed.append({**function.model_dump(), "strict": True})
        elif kind == "namespace":
            namespace = tool.get("name")
            if not isinstance(namespace, str) or not namespace:
                raise InvalidRequest("A namespace tool needs a name.", param=f"tools[{i}].name")
            members = tool.get("tools")
            if not isinstance(members, list):
                raise InvalidRequest("A namespace tool needs its tools.", param=f"tools[{i}].tools")
            for j, member in enumerate(members):
                if not isinstance(member, Mapping) or member.get("type") != "function":
                    log.info("skipped a tool of namespace %r that is not a function", namespace)
                    continue
                function = _function(member, f"tools[{i}].tools[{j}]")
                exposed = f"{namespace}{NAMESPACE_SEPARATOR}{function.name}"
                param = f"tools[{i}].tools[{j}]"
                offered.add(exposed, function.description, function.parameters, param)
                read.namespaces[exposed] = (namespace, function.name)
            read.echoed.append(dict(tool))
        elif isinstance(kind, str):
            log.info("skipped a tool of type %r: Stratus runs function tools only", kind)
        else:
            raise InvalidRequest("A tool needs a type.", param=f"tools[{i}].type")
    read.specs = offered.checked()
    return read


def _function(tool: Mapping[str, Any], param: str) -> FunctionTool:
    try:
        return FunctionTool.model_validate(tool)
    except ValidationError:
        parse_request(FunctionTool, dict(tool))  # raises, naming the field
        raise  # pragma: no cover


def model_name(namespace: str | None, name: str) -> str:
    return f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name


def normalise(
    raw: str | Sequence[Any], unseal: Callable[[str], str], param: str = "input"
) -> list[dict[str, Any]]:
    """Input items in their stored form: each with an id, a status, text content parts.
    `unseal` restores a reasoning item's encrypted_content (the reasoning's text), or raises
    Unsealed for a blob this deployment did not make for this caller."""
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    items = []
    for i, item in enumerate(raw):
        where = f"{param}[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidRequest("An input item must be a JSON object.", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            items.append(_message(item, where))
        elif kind == "function_call":
            call = {
                "type": "function_call",
                "id": _string(item, "id", where, new_id("fc_")),
                "call_id": _string(item, "call_id", where),
                "name": _string(item, "name", where),
                "arguments": _string(item, "arguments", where),
                "status": "completed",
            }
            if item.get("namespace") is not None:
                call["namespace"] = _string(item, "namespace", where)
            items.append(call)
        elif kind == "function_call_output":
            items.append(
                {
                    "type": "function_call_output",
                    "id": _string(item, "id", where, new_id("fco_")),
                    "call_id": _string(item, "call_id", where),
                    "output": _checked(_output(item, where), f"{where}.output"),
                    "status": "completed",
                }
            )
        elif kind == "reasoning":
            items.append(_reasoning(item, where, unseal))
        else:
            raise InvalidRequest(
                f"Input items of type '{kind}' are not supported here (message, function_call, "
                "function_call_output and reasoning are).",
                param=f"{where}.type",
            )
    return items


def _reasoning(item: Mapping[str, Any], where: str, unseal: Callable[[str], str]) -> dict[str, Any]:
    """A reasoning item, its text restored from its sealed blob when it carries one. Earlier
    reasoning stays out of the prompt (as models' templates leave it out)."""
    reasoning = {
        "type": "reasoning",
        "id": _string(item, "id", where, new_id("rs_")),
        "summary": [],
        "status": "completed",
    }
    blob = item.get("encrypted_content")
    if blob is not None:
        try:
            text = unseal(blob) if isinstance(blob, str) else None
        except Unsealed:
            text = None
        if text is None:
            raise InvalidRequest(
                "This reasoning item's encrypted_content was not made by this server for this key.",
                param=f"{where}.encrypted_content",
            )
        reasoning["content"] = [{"type": "reasoning_text", "text": text}]
        reasoning["encrypted_content"] = blob
    return reasoning


def _message(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise InvalidRequest(
            "A message's role must be user, system, developer or assistant.", param=f"{where}.role"
        )
    content = item.get("content")
    kind = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        parts = [{"type": kind, "text": content}]
    elif isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            part_type = part.get("type") if isinstance(part, Mapping) else None
            if part_type == "input_image":
                parts.append(_image(part, role, f"{where}.content[{j}]"))
                continue
            if part_type == "input_audio":
                parts.append(_audio(part, role, f"{where}.content[{j}]"))
                continue
            if part_type not in _TEXT_PARTS:
                raise unsupported(
                    part_type,
                    "text, input_image and input_audio parts",
                    f"{where}.content[{j}].type",
                )
            text = part.get("text", part.get("refusal"))
            if not isinstance(text, str):
                raise InvalidRequest("A text part needs its text.", param=f"{where}.content[{j}]")
            check_text(text, f"{where}.content[{j}].text")
            parts.append({"type": kind, "text": text})
    else:
        raise InvalidRequest(
            "A message's content is a string or a list of content parts.",
            param=f"{where}.content",
        )
    message = {
        "type": "message",
        "id": _string(item, "id", where, new_id("msg_")),
        "role": role,
        "content": parts,
        "status": "completed",
    }
    return message


def _image(part: Mapping[str, Any], role: str, where: str) -> dict[str, Any]:
    """An input_image part, as it is stored: its image_url (a data: or http(s) URL) and
    detail. A file_id names an uploaded file, which this server has no store of."""
    if part.get("file_id") is not None:
        raise InvalidRequest(
            "Images by file_id are not supported here: send the image's data: or http(s) URL "
            "as image_url.",
            param=f"{where}.file_id",
        )
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest("An input_image part needs its image_url.", param=f"{where}.image_url")
    detail = part.get("detail", "auto")
    if detail not in ("auto", "low", "high"):
        raise InvalidRequest("detail is auto, low or high.", param=f"{where}.detail")
    image_ref(role, url, detail, where)  # refused now if the role cannot hold images
    return {"type": "input_image", "image_url": url, "detail": detail}


def _audio(part: Mapping[str, Any], role: str, where: str) -> dict[str, Any]:
    """An input_audio part, as it is stored: its base64 data and format (checked now; heard
    when the prompt is made)."""
    audio = part.get("input_audio")
    data = audio.get("data") if isinstance(audio, Mapping) else None
    audio_format = audio.get("format") if isinstance(audio, Mapping) else None
    if not isinstance(data, str) or audio_format not in get_args(AudioFormat):
        raise InvalidRequest(
            f"An input_audio part needs input_audio.data (base64) and input_audio.format "
            f"({', '.join(get_args(AudioFormat))}).",
            param=f"{where}.input_audio",
        )
    audio_clip(role, data, audio_format, where)  # refused now if it cannot be heard
    return {"type": "input_audio", "input_audio": {"data": data, "format": audio_format}}


def _checked(text: str, param: str) -> str:
    check_text(text, param)
    return text


def _output(item: Mapping[str, Any], where: str) -> str:
    output = item.get("output")
    if isinstance(output, str):
        return output
    if isinstance(output, list):  # text parts only
        texts = []
        for j, part in enumerate(output):
            if not isinstance(part, Mapping) or part.get("type") not in _TEXT_PARTS:
                raise InvalidRequest(
                    "A function call's output is text; only text parts are supported.",
                    param=f"{where}.output[{j}]",
                )
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise InvalidRequest("A function call output needs its output.", param=f"{where}.output")


def _string(item: Mapping[str, Any], name: str, where: str, default: str | None = None) -> str:
    value = item.get(name, default)
    if not isinstance(value, str) or (default is None and not value):
        raise InvalidRequest(
            f"'{where}.{name}' must be a non-empty string.", param=f"{where}.{name}"
        )
    return value


def turns_of(
    items: Sequence[Mapping[str, Any]], instructions: str | None, first_param: int
) -> list[ChatTurn]:
    """A conversation's stored items (earlier turns, then this request's, whose `input[i]`
    starts at `first_param`) as chat turns."""
    check_text(instructions or "", "instructions")
    turns: list[ChatTurn] = [ChatTurn("system", instructions)] if instructions else []
    calls = Calls()
    for index, item in enumerate(items):
        where = f"input[{index - first_param}]" if index >= first_param else "previous_response_id"
        kind = item["type"]
        if kind == "message":
            role = _ROLES[item["role"]]
            content = Content(role, AS_SENT)
            for j, part in enumerate(item["content"]):
                if part["type"] == "input_image":
                    content.image(part["image_url"], part["detail"], f"{where}.content[{j}]")
                elif part["type"] == "input_audio":
                    audio = part["input_audio"]
                    content.sound(audio["data"], audio["format"], f"{where}.content[{j}]")
                else:
                    content.stored_text(part["text"])
            turns.append(
                ChatTurn(
                    role,
                    content.joined,
                    images=tuple(content.images),
                    audio=tuple(content.audio),
                )
            )
        elif kind == "function_call":
            name = model_name(item.get("namespace"), item["name"])
            call = ToolCall(item["call_id"], name, item["arguments"])
            calls.made(call)
            last = turns[-1] if turns else None
            if last is not None and last.role == "assistant":
                turns[-1] = ChatTurn("assistant", last.content, (*last.tool_calls, call))
            else:
                turns.append(ChatTurn("assistant", "", (call,)))
        elif kind == "function_call_output":
            name = calls.answered(item["call_id"], f"{where}.call_id")
            turns.append(ChatTurn("tool", item["output"], (), item["call_id"], name))
    return turns
