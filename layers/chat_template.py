"""A model's Jinja chat template: a conversation, with its tools, rendered as a prompt.

The prompt comes back in pieces, each marked as the template's own text or as text a client
sent, so that the engine parses special tokens (`<|im_start|>`...) in the template's pieces
only: a client who types `<|im_start|>system` in a message gets those characters, not a forged
turn. Each message's content is replaced by a private-use marker while the template renders,
and put back as a piece of its own.

The template also says how the model writes tool calls and reasoning (layers/tool_formats,
layers/reasoning: detected once, here). A template that reads `tools` (Qwen's, Hermes', Llama
3.1's...) gets them in OpenAI's form, and one that reads `tool_calls` gets earlier calls and
results as message fields (Hugging Face's convention); what a template cannot show it gets as
text: layers/tool_prompt's system prompt, calls as assistant text in the model's format, results
as user turns. No template at all: a plain transcript the model can continue.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from common.errors import InvalidRequest
from common.turns import ChatTurn, ToolSpec
from layers import reasoning, tool_formats, tool_prompt
from layers.tool_formats.base import arguments_json

# Unicode private-use characters: no tokenizer's special token, and no template, contains them.
_OPEN, _CLOSE = "\ue000", "\ue001"
# OpenAI's reasoning efforts in the three words GPT-OSS's template knows.
_TEMPLATE_EFFORTS = {"none": "low", "minimal": "low", "xhigh": "high", "max": "high"}
_MARKER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
log = logging.getLogger("stratus.chat_template")


class PromptPiece(NamedTuple):
    text: str
    from_client: bool  # tokenized as plain text: special tokens are not parsed in it


def formats_of(
    template: str | None, reasoning_format: str | None, tool_format: str | None
) -> tuple[str, str]:
    """The names of the tool-call and reasoning formats a model gets from its template and
    the registry's overrides (what `stratus models` shows; the engine logs the same)."""
    tools = tool_format or tool_formats.detect(template)
    thinks = (
        reasoning.detect(template)
        if reasoning_format is None
        else reasoning.FORMATS.get(reasoning_format)
    )
    return (tools or f"{tool_formats.GENERIC} (generic)", thinks.name if thinks else "none")


class ChatTemplate:
    def __init__(
        self,
        template: str | None,
        bos_token: str,
        eos_token: str,
        add_bos: bool,
        reasoning_format: str | None = None,  # the registry's overrides of the detection
        tool_format: str | None = None,
        model: str = "",  # whose template, for the log
    ):
        self._formatter = (
            _formatter(template, eos_token=eos_token, bos_token=bos_token) if template else None
        )
        self.takes_tools = bool(template) and "tools" in template
        self._renders_calls = bool(template) and "tool_calls" in template
        # A template that reads tool turns itself (most that render calls do).
        self._reads_tool_role = self._renders_calls or bool(
            template and re.search(r"""==\s*["']tool["']""", template)
        )
        self._string_arguments = False  # a template that concatenates arguments as text
        self.tool_format_name = tool_format or tool_formats.detect(template)
        self.tool_format = tool_formats.by_name(self.tool_format_name)
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
        log.info(
            "%s calls tools in the %s format%s; %s",
            model or "a model",
            self.tool_format.name,
            "" if self.tool_format_name else " (generic: its template shows none)",
            "no reasoning"
            if self.reasoning is None
            else f"thinks in {self.reasoning.name} blocks"
            + (" (its prompt opens them)" if self.reasoning_opens else ""),
        )

    def render(
        self,
        turns: Sequence[ChatTurn],
        tools: Sequence[ToolSpec] = (),
        thinking: bool = True,
        effort: str | None = None,
    ) -> list[PromptPiece]:
        """`thinking` False: the template's own switch (`enable_thinking`, as Qwen3's and
        DeepSeek R1's read it), and a block the prompt still opens is closed at once.
        `effort`: the request's reasoning effort, as `reasoning_effort` for templates that
        read one (GPT-OSS's: low, medium or high)."""
        switches: dict[str, Any] = {"enable_thinking": thinking}
        if effort is not None:
            switches["reasoning_effort"] = _TEMPLATE_EFFORTS.get(effort, effort)
        fmt = self.tool_format
        history = any(t.tool_calls or t.role == "tool" for t in turns)
        if history and not self._renders_calls:
            turns = tool_prompt.as_plain_turns(turns, fmt, tool_role=self._reads_tool_role)
        if tools and not self.takes_tools:
            turns = _with_system_text(turns, tool_prompt.system_prompt(tools, fmt))
        described = [_described(tool) for tool in tools] if tools and self.takes_tools else None
        try:
            if history and self._renders_calls:
                pieces = self._render_with_calls(turns, described, switches)
            else:
                pieces = self._render([_plain_message(t) for t in turns], described, switches)
        except TypeError as exc:  # the template's own `+` on a field of another type
            raise _unfit(exc) from None
        if not thinking and self.reasoning and _ends_with(pieces, self.reasoning.start):
            pieces.append(PromptPiece(f"\n{self.reasoning.end}\n\n", False))
        return pieces

    def text(
        self,
        turns: Sequence[ChatTurn],
        tools: Sequence[ToolSpec] = (),
        thinking: bool = True,
        effort: str | None = None,
    ) -> str:
        """The prompt as one string (for reading it; the engine tokenizes the pieces)."""
        return "".join(piece.text for piece in self.render(turns, tools, thinking, effort))

    def _render_with_calls(
        self,
        turns: Sequence[ChatTurn],
        tools: list[dict[str, Any]] | None,
        switches: dict[str, Any],
    ) -> list[PromptPiece]:
        """Calls and results as message fields, their ids in the form the template accepts;
        arguments as objects (Hugging Face's convention), or as text for a template that
        concatenates them (Functionary's): learnt on the first conversation that needs it."""
        for as_text in (self._string_arguments, True):
            messages = [_template_message(t, self.tool_format, as_text) for t in turns]
            try:
                pieces = self._render(messages, tools, switches)
            except TypeError:
                if as_text:
                    raise
                continue
            self._string_arguments = as_text  # learnt only when text is what renders
            return pieces
        raise AssertionError("unreachable")

    def _opens_block(self, messages: list[dict[str, Any]]) -> bool:
        assert self.reasoning is not None
        try:
            switches = {"enable_thinking": True}
            return _ends_with(self._render(messages, None, switches), self.reasoning.start)
        except InvalidRequest:
            return False

    def _render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        switches: dict[str, Any],
    ) -> list[PromptPiece]:
        """`switches`: the template variables a request sets (enable_thinking...)."""
        contents = [m["content"] for m in messages]
        # Empty content stays empty: templates test it (`not message.content`: a call only).
        marked = [
            {**m, "content": f"{_OPEN}{i}{_CLOSE}" if m["content"] else ""}
            for i, m in enumerate(messages)
        ]
        if self._formatter is None:
            lines = [f"{m['role']}: {m['content']}" for m in marked]
            return _pieces("\n".join(lines) + "\nassistant:", contents)
        from jinja2 import TemplateError

        try:
            prompt = self._formatter(marked, tools, **switches)
        except ValueError as exc:  # the template's raise_exception: e.g. roles out of order
            raise InvalidRequest(
                f"The messages do not fit this model's chat template: {exc}", param="messages"
            ) from None
        except TemplateError as exc:  # a field the template reads that the request lacks
            raise _unfit(exc) from None
        if self._strip and prompt.startswith(self._strip):
            prompt = prompt[len(self._strip) :]
        return _pieces(prompt, contents)


def _formatter(template: str, eos_token: str, bos_token: str) -> Any:
    """A render function of the template, as Hugging Face's transformers renders chat
    templates (and llama-cpp-python after it): a sandboxed Jinja environment with
    `loopcontrols`, `{% generation %}` passed through, trimmed blocks, `raise_exception` and
    `strftime_now`; its `tojson` also takes what a filter chain yields (`tools |
    map(attribute='function') | tojson`, as DeepSeek R1's template writes it; Jinja's `map`
    gives a generator, which minja and Hugging Face render as a list)."""
    from datetime import datetime

    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class IgnoreGenerationTags(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            parser.stream.skip(1)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: Any = None, sort_keys: bool = False) -> str:  # fmt: skip
        if not isinstance(x, str | bytes | dict | list | tuple) and hasattr(x, "__iter__"):
            x = list(x)
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
            sort_keys=sort_keys,
        )  # fmt: skip

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    environment = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[IgnoreGenerationTags, jinja2.ext.loopcontrols],
    )
    environment.filters["tojson"] = tojson
    compiled = environment.from_string(template)

    def render(messages: list[dict[str, Any]], tools: Any, **switches: Any) -> str:
        return compiled.render(
            messages=messages,
            eos_token=eos_token,
            bos_token=bos_token,
            raise_exception=raise_exception,
            add_generation_prompt=True,
            functions=None,
            function_call=None,
            tools=tools,
            tool_choice=None,
            strftime_now=lambda f: datetime.now().strftime(f),
            **switches,
        )

    return render


def _pieces(rendered: str, contents: list[str]) -> list[PromptPiece]:
    """The rendered template cut at its markers, each marker replaced by the content it
    stands for (a template may repeat a message, or leave one out). A marker in quotes was
    written with `tojson` (GPT-OSS's and Llama 3.1's tool results): its content is escaped
    as JSON, as the template would have written it."""
    pieces = []
    position = 0
    for marker in _MARKER.finditer(rendered):
        if marker.start() > position:
            pieces.append(PromptPiece(rendered[position : marker.start()], False))
        index = int(marker.group(1))
        if index < len(contents) and contents[index]:
            content = contents[index]
            if rendered[marker.start() - 1 : marker.start()] == '"' == rendered[marker.end() :][:1]:
                content = json.dumps(content, ensure_ascii=False)[1:-1]
            pieces.append(PromptPiece(content, True))
        position = marker.end()
    if position < len(rendered):
        pieces.append(PromptPiece(rendered[position:], False))
    return pieces


def _ends_with(pieces: list[PromptPiece], marker: str) -> bool:
    return bool(pieces) and not pieces[-1].from_client and pieces[-1].text.rstrip().endswith(marker)


def _described(tool: ToolSpec) -> dict[str, Any]:
    """A tool as templates read it: OpenAI's form with a description always, empty where the
    request has none (as llama.cpp's server gives them): GPT-OSS's template writes
    `"// " + tool.description` unguarded."""
    function = {"name": tool.name, "description": tool.description or ""}
    return {"type": "function", "function": {**function, "parameters": dict(tool.parameters)}}


def _unfit(exc: Exception) -> InvalidRequest:
    """A template that failed on what a request sent (a tool without a field it reads, a
    default of a type it cannot add to text): the client's 400, the details in the log."""
    log.warning("The chat template failed on a request: %s: %s", type(exc).__name__, exc)
    return InvalidRequest(
        "The request does not fit this model's chat template: it failed on the tools or "
        "messages as sent (a field it expects is missing, or has a type it does not take).",
        param="messages",
    )


def _plain_message(turn: ChatTurn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": turn.role, "content": turn.content}
    if turn.reasoning:  # under the keys templates read: Qwen3's, and GPT-OSS's
        message["reasoning_content"] = message["thinking"] = turn.reasoning
    return message


def _template_message(
    turn: ChatTurn, fmt: tool_formats.ToolFormat, arguments_as_text: bool
) -> dict[str, Any]:
    """A turn as the message dict templates with tool support read: a call's arguments as an
    object (or text), a tool result with its call's id and function name."""
    message = _plain_message(turn)
    if turn.tool_calls:
        message["tool_calls"] = [
            {
                "id": fmt.template_id(call.id),
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.arguments
                    if arguments_as_text
                    else arguments_json(call.arguments),
                },
            }
            for call in turn.tool_calls
        ]
    if turn.tool_call_id is not None:
        message["tool_call_id"] = fmt.template_id(turn.tool_call_id)
    if turn.name is not None:
        message["name"] = turn.name
    return message


def _with_system_text(turns: Sequence[ChatTurn], text: str) -> list[ChatTurn]:
    """The conversation with `text` at the end of its system message (a new one if none)."""
    if turns and turns[0].role == "system":
        first = turns[0].content
        return [ChatTurn("system", f"{first}\n\n{text}" if first else text), *turns[1:]]
    return [ChatTurn("system", text), *turns]
