"""A model's Jinja chat template: a conversation, with its tools, rendered as a prompt.

The prompt comes back in pieces, each marked as the template's own text or as text a client
sent, so that the engine parses special tokens (`<|im_start|>`...) in the template's pieces
only: a client who types `<|im_start|>system` in a message gets those characters, not a forged
turn. Each message's content is replaced by a private-use marker while the template renders,
and put back as a piece of its own.

A template that reads `tools` (Qwen's, Hermes', Llama 3.1's...) gets them in OpenAI's form and
earlier calls and results as message fields (Hugging Face's convention); any other template
gets them as text: layers/tool_calls' system prompt, calls as assistant text, results as user
turns. No template at all: a plain transcript the model can continue.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from common.errors import InvalidRequest
from layers import reasoning, tool_calls
from layers.text import ChatTurn, ToolSpec

# Unicode private-use characters: no tokenizer's special token, and no template, contains them.
_OPEN, _CLOSE = "\ue000", "\ue001"
_MARKER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
log = logging.getLogger("stratus.chat_template")


class PromptPiece(NamedTuple):
    text: str
    from_client: bool  # tokenized as plain text: special tokens are not parsed in it


class ChatTemplate:
    def __init__(
        self,
        template: str | None,
        bos_token: str,
        eos_token: str,
        add_bos: bool,
        reasoning_format: str | None = None,  # the registry's override of the detection
        model: str = "",  # whose template, for the log
    ):
        self._formatter = None
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template=template, eos_token=eos_token, bos_token=bos_token
            )
        self.takes_tools = bool(template) and "tools" in template
        # The tokenizer adds the BOS token itself: a template that writes it would double it.
        self._strip = bos_token if add_bos else ""
        self.reasoning = (
            reasoning.detect(template)
            if reasoning_format is None
            else reasoning.FORMATS.get(reasoning_format)
        )
        self.reasoning_opens = self.reasoning is not None and self._opens_block(
            [{"role": "user", "content": "Hi"}]
        )
        if self.reasoning is not None:
            log.info(
                "%s thinks in %s blocks%s",
                model or "a model",
                self.reasoning.name,
                " (its prompt opens them)" if self.reasoning_opens else "",
            )

    def render(
        self, turns: Sequence[ChatTurn], tools: Sequence[ToolSpec] = (), thinking: bool = True
    ) -> list[PromptPiece]:
        """`thinking` False: the template's own switch (`enable_thinking`, as Qwen3's and
        DeepSeek R1's read it), and a block the prompt still opens is closed at once."""
        if tools and self.takes_tools:
            messages = [_template_message(t) for t in turns]
            pieces = self._render(messages, [tool.openai() for tool in tools], thinking)
        else:
            if tools or any(t.tool_calls or t.role == "tool" for t in turns):
                turns = tool_calls.as_plain_turns(turns)
            if tools:
                turns = _with_system_text(turns, tool_calls.system_prompt(tools, required=False))
            pieces = self._render([_plain_message(t) for t in turns], None, thinking)
        if not thinking and self.reasoning and _ends_with(pieces, self.reasoning.start):
            pieces.append(PromptPiece(f"\n{self.reasoning.end}\n\n", False))
        return pieces

    def text(
        self, turns: Sequence[ChatTurn], tools: Sequence[ToolSpec] = (), thinking: bool = True
    ) -> str:
        """The prompt as one string (for reading it; the engine tokenizes the pieces)."""
        return "".join(piece.text for piece in self.render(turns, tools, thinking))

    def _opens_block(self, messages: list[dict[str, Any]]) -> bool:
        assert self.reasoning is not None
        try:
            return _ends_with(self._render(messages, None, True), self.reasoning.start)
        except InvalidRequest:
            return False

    def _render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        thinking: bool = True,
    ) -> list[PromptPiece]:
        contents = [m["content"] for m in messages]
        marked = [{**m, "content": f"{_OPEN}{i}{_CLOSE}"} for i, m in enumerate(messages)]
        if self._formatter is None:
            lines = [f"{m['role']}: {m['content']}" for m in marked]
            return _pieces("\n".join(lines) + "\nassistant:", contents)
        try:
            prompt = self._formatter(messages=marked, tools=tools, enable_thinking=thinking).prompt
        except ValueError as exc:  # the template's raise_exception: e.g. roles out of order
            raise InvalidRequest(
                f"The messages do not fit this model's chat template: {exc}", param="messages"
            ) from None
        if self._strip and prompt.startswith(self._strip):
            prompt = prompt[len(self._strip) :]
        return _pieces(prompt, contents)


def _pieces(rendered: str, contents: list[str]) -> list[PromptPiece]:
    """The rendered template cut at its markers, each marker replaced by the content it
    stands for (a template may repeat a message, or leave one out)."""
    pieces = []
    position = 0
    for marker in _MARKER.finditer(rendered):
        if marker.start() > position:
            pieces.append(PromptPiece(rendered[position : marker.start()], False))
        index = int(marker.group(1))
        if index < len(contents) and contents[index]:
            pieces.append(PromptPiece(contents[index], True))
        position = marker.end()
    if position < len(rendered):
        pieces.append(PromptPiece(rendered[position:], False))
    return pieces


def _ends_with(pieces: list[PromptPiece], marker: str) -> bool:
    return bool(pieces) and not pieces[-1].from_client and pieces[-1].text.rstrip().endswith(marker)


def _plain_message(turn: ChatTurn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": turn.role, "content": turn.content}
    if turn.reasoning:
        message["reasoning_content"] = turn.reasoning  # the key templates read (Qwen3's)
    return message


def _template_message(turn: ChatTurn) -> dict[str, Any]:
    """A turn as the message dict templates with tool support read: a call's arguments as an
    object, a tool result with its call's id and function name."""
    message = _plain_message(turn)
    if turn.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _json_or_text(call.arguments)},
            }
            for call in turn.tool_calls
        ]
    if turn.tool_call_id is not None:
        message["tool_call_id"] = turn.tool_call_id
    if turn.name is not None:
        message["name"] = turn.name
    return message


def _json_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _with_system_text(turns: Sequence[ChatTurn], text: str) -> list[ChatTurn]:
    """The conversation with `text` at the end of its system message (a new one if none)."""
    if turns and turns[0].role == "system":
        first = turns[0].content
        return [ChatTurn("system", f"{first}\n\n{text}" if first else text), *turns[1:]]
    return [ChatTurn("system", text), *turns]
