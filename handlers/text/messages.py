"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API, the conversation's
events rendered as Messages stream events (and collected into one Message when not streamed)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

from common.errors import InvalidRequest
from common.image_input import ImageLimits, check_text
from common.protocol.base import new_id
from common.protocol.chat import REASONING_BUDGETS
from common.protocol.messages import (
    ContentBlockDeltaEvent,
    ContentBlockParam,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    CustomToolParam,
    InputJsonDelta,
    Message,
    MessageCountTokensRequest,
    MessageCreateRequest,
    MessageDelta,
    MessageDeltaEvent,
    MessageDeltaUsage,
    MessageStartEvent,
    MessageStopEvent,
    MessageStreamEvent,
    MessageTokensCount,
    MessageUsage,
    PingEvent,
    SignatureDelta,
    TextBlock,
    TextBlockDelta,
    ThinkingBlock,
    ThinkingBlockDelta,
    ToolChoiceToolParam,
    ToolUseBlock,
)
from common.sealed import Signer
from common.store import ModelStore
from common.turns import ChatTurn, ToolCall
from handlers.text.conversation import events
from handlers.text.conversation.answer import PARTIAL_INPUT, whole_arguments
from handlers.text.conversation.generate import ConversationRequest, count_prompt, generate
from handlers.text.conversation.plan import (
    ChatPlan,
    NamedChoice,
    ToolChoice,
    ToolList,
    make_plan,
    output_format,
)
from handlers.text.conversation.turns import BLANK_LINE, Calls, Content, unsupported

log = logging.getLogger("stratus.messages")

STOP_REASONS = {"stop": "end_turn", "stop_sequence": "stop_sequence", "length": "max_tokens",
                "tool_calls": "tool_use"}  # fmt: skip
CHOICES: dict[str, ToolChoice] = {"auto": "auto", "any": "required", "none": "none"}
THINKING = ("thinking", "redacted_thinking")  # old thinking: left out of the prompt


def create_message(
    request: MessageCreateRequest,
    store: ModelStore,
    images: ImageLimits | None = None,
    signer: Signer | None = None,
) -> Message | Iterator[MessageStreamEvent]:
    """`images`: how images in the messages are read (the adapter's limits; defaults else).
    `signer`: the caller's, which signs the thinking blocks given and checks those handed back
    (None: unsigned, and none checked)."""
    conversation = message_conversation(request, images, signer)
    stream = _render(conversation, request, store, signer)
    return stream if request.stream else _collect(stream)


def count_message_tokens(
    request: MessageCountTokensRequest,
    store: ModelStore,
    images: ImageLimits | None = None,
    signer: Signer | None = None,
) -> MessageTokensCount:
    """The usage.input_tokens the same message would have."""
    conversation = message_conversation(request, images, signer)
    return MessageTokensCount(input_tokens=count_prompt(conversation, store))


def message_conversation(
    request: MessageCountTokensRequest,
    images: ImageLimits | None = None,
    signer: Signer | None = None,
) -> ConversationRequest:
    budget = getattr(request, "max_tokens", None)
    sampling = {name: getattr(request, name, None) for name in ("temperature", "top_p", "top_k")}
    return ConversationRequest(
        model=request.model,
        plan=message_plan(request, signer),
        sampling=sampling,
        budget=budget,
        budget_is_ceiling=True,
        stops=tuple(getattr(request, "stop_sequences", None) or ()),
        call_prefix="toolu_",
        thinking=not (request.thinking and request.thinking.type == "disabled"),
        reasoning_budget=getattr(request.thinking, "budget_tokens", None)
        or REASONING_BUDGETS.get(getattr(request.output_config, "effort", None) or ""),
        reasoning_effort=getattr(request.output_config, "effort", None),
        image_limits=images or ImageLimits(),
    )


def message_plan(request: MessageCountTokensRequest, signer: Signer | None = None) -> ChatPlan:
    """Custom tools (server tools skipped), the tool choice and the output format as a plan."""
    offered = ToolList()
    for i, tool in enumerate(request.tools or []):
        if not isinstance(tool, CustomToolParam):
            log.info("skipped the server tool %r of type %r: not served here", tool.name, tool.type)
            continue
        offered.add(tool.name, tool.description, tool.input_schema, f"tools[{i}]", "input_schema")
    choice = request.tool_choice
    parallel = not (choice and choice.disable_parallel_tool_use)
    mapped: ToolChoice = None
    if isinstance(choice, ToolChoiceToolParam):
        mapped = NamedChoice(choice.name)
    elif choice is not None:
        mapped = CHOICES[choice.type]
    output = request.output_config.format if request.output_config else None
    return make_plan(
        message_turns(request, signer),
        offered.checked(),
        mapped,
        parallel,
        output_format("json_schema" if output else None, output.json_schema if output else None),
        format_param="output_config.format",
        schema_param="output_config.format.schema",
    )


def message_turns(
    request: MessageCountTokensRequest, signer: Signer | None = None
) -> list[ChatTurn]:
    """The system text and the messages as turns. A user message's tool results become tool
    turns, its text a user turn after them; old thinking is dropped, once its signature is
    checked (`signer`); a block a text model cannot read, or a result answering no earlier
    tool_use, is a 400."""
    system = request.system
    if isinstance(system, list):
        system = "\n\n".join(block.text for block in system)
    check_text(system or "", "system")
    turns = [ChatTurn("system", system)] if system else []
    calls = Calls()
    for i, message in enumerate(request.messages):
        content = Content(message.role, BLANK_LINE)
        if isinstance(message.content, str):
            content.text(message.content, f"messages[{i}].content")
            turns.append(ChatTurn(message.role, content.joined))
            continue
        made: list[ToolCall] = []
        results: list[ChatTurn] = []
        for j, block in enumerate(message.content):
            param = f"messages[{i}].content[{j}]"
            kind = (message.role, block.type)
            if block.type == "text":
                content.text(block.text or "", f"{param}.text")
            elif block.type == "image" and block.source is not None:
                content.image(block.source.address, None, param)
            elif kind == ("assistant", "tool_use"):
                assert block.id and block.name
                made.append(ToolCall(block.id, block.name, json.dumps(block.input)))
            elif kind == ("user", "tool_result"):
                assert block.tool_use_id is not None
                name = calls.answered(block.tool_use_id, f"{param}.tool_use_id")
                text = _result_text(block, param)
                results.append(ChatTurn("tool", text, (), block.tool_use_id, name))
            elif message.role == "assistant" and block.type in THINKING:
                if signer is not None:
                    _check_signature(block, signer, param)
            else:
                raise _refused(message.role, block.type, f"{param}.type")
        calls.made(*made)
        turns.extend(results)
        if content.texts or made or not results and message.role == "user":
            turns.append(
                ChatTurn(message.role, content.joined, tuple(made), images=tuple(content.images))
            )
    return turns


def _check_signature(block: ContentBlockParam, signer: Signer, param: str) -> None:
    """A thinking block handed back must be one this deployment gave this caller, word for
    word, as Anthropic checks its own; a redacted one never is (none is made here)."""
    if block.type == "redacted_thinking":
        raise InvalidRequest(
            f"{param}: a `redacted_thinking` block cannot be verified here (none is made here); "
            "leave it out.",
            param=f"{param}.data",
        )
    if not signer.verify(block.thinking or "", block.signature or ""):
        raise InvalidRequest(
            f"{param}: Invalid `signature` in `thinking` block: it was not given with this "
            "text to this API key; send thinking blocks back unchanged, or leave them out.",
            param=f"{param}.signature",
        )


def _refused(role: str, kind: str, param: str) -> InvalidRequest:
    if kind in ("tool_use", *THINKING):
        return InvalidRequest(
            f"A '{kind}' block belongs in an assistant message, not a {role} message.",
            param=param,
        )
    if kind == "tool_result":
        return InvalidRequest(
            "A 'tool_result' block belongs in a user message, not an assistant message.",
            param=param,
        )
    return unsupported(kind, "text and image blocks", param, noun="blocks")


def _result_text(block: ContentBlockParam, param: str) -> str:
    content = block.content or ""
    if not isinstance(content, str):
        for k, part in enumerate(content):
            if part.type != "text":
                raise _refused("user", part.type, f"{param}.content[{k}].type")
        content = "\n\n".join(part.text or "" for part in content)
    check_text(content, f"{param}.content")
    return f"Error: {content}" if block.is_error else content


def _render(
    conversation: ConversationRequest,
    request: MessageCreateRequest,
    store: ModelStore,
    signer: Signer | None = None,
) -> Iterator[MessageStreamEvent]:
    """Every message, streamed or not, is this stream of events; errors come before the first."""
    message_id = new_id("msg_")
    display = getattr(request.thinking, "display", None)
    blocks = _Blocks(omit_thinking=display == "omitted", signer=signer)
    prompt_tokens, finished = 0, events.Finished(0, "stop")
    for event in generate(conversation, store):
        if isinstance(event, events.Started):
            prompt_tokens = event.prompt_tokens
            usage = MessageUsage(input_tokens=prompt_tokens, output_tokens=0)
            start = Message(id=message_id, model=request.model, content=[], usage=usage)
            yield MessageStartEvent(message=start)
            yield PingEvent()
        elif isinstance(event, events.Finished):
            yield from blocks.close()
            finished = event
        elif isinstance(event, events.TokenUsage):
            delta = MessageDelta(
                stop_reason=STOP_REASONS[finished.reason],  # type: ignore[arg-type]
                stop_sequence=finished.stop_sequence,
            )
            usage = MessageDeltaUsage(
                output_tokens=event.completion_tokens, input_tokens=prompt_tokens
            )
            yield MessageDeltaEvent(delta=delta, usage=usage)
            yield MessageStopEvent()
        else:
            yield from blocks.render(event)


class _Blocks:
    """Deltas as content blocks, indexed from 0: a text block opens on the first text, a
    thinking block on the first reasoning (closed by the signature of the text it gave), a
    tool_use block on a call's start; a block of another kind closes the open one."""

    def __init__(self, omit_thinking: bool = False, signer: Signer | None = None) -> None:
        self.index = -1
        self.kind: str | None = None  # the open block's
        # thinking.display "omitted" (Claude Code's): the block is there, its text is not.
        self._omit_thinking = omit_thinking
        self._signer = signer
        self._thinking: list[str] = []  # the open thinking block's text, as given

    def render(self, event: events.Event) -> Iterator[MessageStreamEvent]:
        if isinstance(event, events.TextDelta) and event.text:
            yield from self._open("text", TextBlock(text=""))
            yield self._delta(TextBlockDelta(text=event.text))
        elif isinstance(event, events.ReasoningDelta) and event.text:
            yield from self._open("thinking", ThinkingBlock(thinking=""))
            if not self._omit_thinking:
                self._thinking.append(event.text)
                yield self._delta(ThinkingBlockDelta(thinking=event.text))
        elif isinstance(event, events.ToolCallStarted):
            yield from self.close()
            block = ToolUseBlock(id=event.call_id, name=event.name, input={})
            yield from self._open("tool_use", block)
        elif isinstance(event, events.ArgumentsDelta) and event.text:
            yield self._delta(InputJsonDelta(partial_json=event.text))
        elif isinstance(event, events.CallDone):
            yield from self.close()

    def close(self) -> Iterator[MessageStreamEvent]:
        if self.kind == "thinking":
            given, self._thinking = "".join(self._thinking), []
            signature = self._signer.sign(given) if self._signer is not None else ""
            yield self._delta(SignatureDelta(signature=signature))
        if self.kind is not None:
            yield ContentBlockStopEvent(index=self.index)
        self.kind = None

    def _open(
        self, kind: str, block: TextBlock | ThinkingBlock | ToolUseBlock
    ) -> Iterator[MessageStreamEvent]:
        if self.kind == kind and kind != "tool_use":
            return
        yield from self.close()
        self.index += 1
        self.kind = kind
        yield ContentBlockStartEvent(index=self.index, content_block=block)

    def _delta(
        self, delta: TextBlockDelta | InputJsonDelta | ThinkingBlockDelta | SignatureDelta
    ) -> ContentBlockDeltaEvent:
        return ContentBlockDeltaEvent(index=self.index, delta=delta)


def _collect(stream: Iterator[MessageStreamEvent]) -> Message:
    """The stream gathered back into one Message: deltas joined, each call's input parsed
    (what a call cut short by max_tokens had, for a partial one)."""
    message: Message | None = None
    parts: list[list[str]] = []
    for event in stream:
        if isinstance(event, MessageStartEvent):
            message = event.message
        elif isinstance(event, ContentBlockStartEvent):
            assert message is not None
            message.content.append(event.content_block.model_copy())
            parts.append([])
        elif isinstance(event, ContentBlockDeltaEvent):
            delta = event.delta
            if isinstance(delta, TextBlockDelta):
                parts[event.index].append(delta.text)
            elif isinstance(delta, InputJsonDelta):
                parts[event.index].append(delta.partial_json)
            elif isinstance(delta, ThinkingBlockDelta):
                parts[event.index].append(delta.thinking)
            elif isinstance(delta, SignatureDelta):
                assert message is not None
                block = message.content[event.index]
                assert isinstance(block, ThinkingBlock)
                block.signature = delta.signature
        elif isinstance(event, ContentBlockStopEvent):
            assert message is not None
            _fill(message.content[event.index], "".join(parts[event.index]))
        elif isinstance(event, MessageDeltaEvent):
            assert message is not None
            message.stop_reason = event.delta.stop_reason
            message.stop_sequence = event.delta.stop_sequence
            message.usage.output_tokens = event.usage.output_tokens
    assert message is not None
    return message


def _fill(block: TextBlock | ToolUseBlock | ThinkingBlock, text: str) -> None:
    if isinstance(block, TextBlock):
        block.text = text
    elif isinstance(block, ThinkingBlock):
        block.thinking = text
    else:
        block.input = whole_arguments(text, PARTIAL_INPUT) or {}
