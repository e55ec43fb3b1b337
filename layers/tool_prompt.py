"""Tools for a chat template that cannot show them itself: the tools described in a system
prompt, and earlier calls and results written into the conversation as text.

The calls are written in the model's own format (layers/tool_formats): the one its template
shows when it shows any, Hermes' `<tool_call>` tags otherwise:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Whatever the prompt says, the grammar of the format makes the output well-formed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from common.turns import ChatTurn, ToolCall, ToolSpec
from layers.tool_formats.base import ToolFormat

_EXAMPLE = ToolCall("call_0", "<function name>", '{"<argument>": "<value>"}')


def system_prompt(tools: Sequence[ToolSpec], fmt: ToolFormat) -> str:
    """The tools described for a model whose chat template does not describe them."""
    described = "\n".join(json.dumps(tool.openai(), ensure_ascii=False) for tool in tools)
    return (
        "You can call functions. Their signatures, as JSON schemas, are inside <tools></tools>:\n"
        f"<tools>\n{described}\n</tools>\n"
        "Call one only when it helps. To call a function, write its name and its arguments "
        f"as a JSON object like this:\n{fmt.render_calls([_EXAMPLE])}"
    )


def as_plain_turns(
    turns: Sequence[ChatTurn], fmt: ToolFormat, tool_role: bool = False
) -> list[ChatTurn]:
    """A conversation with tools, for a template that does not render calls: calls become
    assistant text in the model's format; results stay tool turns if the template reads them
    (`tool_role`), or become user turns in <tool_response> tags (consecutive ones in one)."""
    plain: list[ChatTurn] = []
    for turn in turns:
        if turn.role == "assistant" and turn.tool_calls:
            calls = fmt.render_calls(turn.tool_calls)
            text = f"{turn.content}\n{calls}" if turn.content else calls
            plain.append(ChatTurn("assistant", text, reasoning=turn.reasoning))
        elif turn.role == "tool" and not tool_role:
            response = f"<tool_response>\n{turn.content}\n</tool_response>"
            if (
                plain
                and plain[-1].role == "user"
                and plain[-1].content.endswith("</tool_response>")
            ):
                response = f"{plain.pop().content}\n{response}"
            plain.append(ChatTurn("user", response))
        else:
            plain.append(turn)
    return plain
