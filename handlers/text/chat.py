"""POST /v1/chat/completions: the request parsed into a conversation's plan (its messages as
turns, its tools or legacy functions, its response format), and the conversation's events
rendered as Chat Completions chunks, or collected into one completion."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

from common.errors import InvalidRequest
from common.image_input import ImageLimits
from common.protocol.base import Usage, new_id
from common.protocol.chat import (
    ChatAudio,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChoiceDelta,
    ChoiceLogprobs,
    FunctionCall,
    FunctionCallDelta,
    NamedFunction,
    NamedToolChoice,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
)
from common.store import ModelStore
from common.turns import ChatTurn
from common.turns import ToolCall as EarlierCall  # beside the answer's ToolCall above
from handlers.text.checks import asked_sampling
from handlers.text.conversation import events
from handlers.text.conversation.answer import LEFT_OUT, whole_arguments
from handlers.text.conversation.generate import ConversationRequest, generate
from handlers.text.conversation.plan import (
    ChatPlan,
    NamedChoice,
    ToolChoice,
    ToolList,
    make_plan,
    output_format,
)
from handlers.text.conversation.turns import AS_SENT, Calls, Content, unsupported
from handlers.text.logprobs import chat_logprobs
from handlers.text.spoken import check_voice, spoken, transcript_of


def create_chat_completion(
    request: ChatCompletionRequest, store: ModelStore, images: ImageLimits | None = None
) -> ChatCompletion | Iterator[ChatCompletionChunk]:
    """`images`: how images in the messages are read (the adapter's limits; defaults else)."""
    conversation = chat_conversation(request, images)
    if request.audio is not None:
        check_voice(request.audio, store)
    stream = _chat(conversation, request, store)
    if request.audio is not None:  # a spoken answer
        stream = spoken(stream, request.audio, store)
    if request.stream:
        return stream
    return _collect(stream)


def chat_conversation(
    request: ChatCompletionRequest, images: ImageLimits | None = None
) -> ConversationRequest:
    return ConversationRequest(
        model=request.model,
        plan=chat_plan(request),
        sampling=asked_sampling(request),
        budget=request.token_budget,
        n=request.n,
        stops=tuple(request.stop_sequences),
        top_logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        budget_param="max_completion_tokens" if request.max_completion_tokens else "max_tokens",
        thinking=request.thinking,
        reasoning_budget=request.reasoning_budget,
        reasoning_effort=request.reasoning_effort,
        image_limits=images or ImageLimits(),
    )


# Chat Completions' roles that other roles stand for: the developer speaks as the system, and
# a legacy function result is a tool result.
_ROLE_ALIASES = {"developer": "system", "function": "tool"}


def chat_plan(request: ChatCompletionRequest) -> ChatPlan:
    """Chat Completions' fields (tools or the deprecated functions) as a plan."""
    legacy = request.functions is not None or request.function_call is not None
    if legacy and (request.tools is not None or request.tool_choice is not None):
        raise InvalidRequest(
            "Send either tools and tool_choice or the deprecated functions and function_call, "
            "not both.",
            param="functions" if request.functions is not None else "function_call",
        )
    choice: ToolChoice
    if legacy:
        definitions = list(request.functions or [])
        asked = request.function_call
        choice = NamedChoice(asked.name) if isinstance(asked, NamedFunction) else asked
        prefix, choice_param = "functions", "function_call"
    else:
        definitions = [tool.function for tool in request.tools or []]
        named = request.tool_choice
        choice = NamedChoice(named.function.name) if isinstance(named, NamedToolChoice) else named
        prefix, choice_param = "tools", "tool_choice"
    offered = ToolList()
    for i, definition in enumerate(definitions):
        param = f"{prefix}[{i}]" + ("" if legacy else ".function")
        offered.add(definition.name, definition.description, definition.parameters, param)
    tools = offered.checked()
    response_format = request.response_format
    schema = response_format.json_schema if response_format is not None else None
    output = output_format(
        response_format.type if response_format is not None else None,
        schema.json_schema if schema is not None else None,
    )
    return make_plan(
        chat_turns(request.messages),
        tools,
        choice,
        parallel=request.parallel_tool_calls is not False and not legacy,
        output=output,
        choice_param=choice_param,
        legacy=legacy,
    )


def chat_turns(messages: list[ChatMessage]) -> list[ChatTurn]:
    """Messages as turns; a part a text model cannot read, or a tool result answering no
    call made before it, is a 400."""
    turns = []
    calls = Calls()
    for i, message in enumerate(messages):
        content = _content(message, i)
        role = _ROLE_ALIASES.get(message.role, message.role)
        made: list[EarlierCall] = []
        if message.role == "assistant":
            for call in message.tool_calls or []:
                made.append(EarlierCall(call.id, call.function.name, call.function.arguments))
            if message.function_call is not None:  # legacy: one call, identified by its name
                function = message.function_call
                made.append(EarlierCall(function.name, function.name, function.arguments))
            calls.made(*made)
        call_id, name = message.tool_call_id, message.name
        if message.role == "tool":
            if call_id is None:
                raise InvalidRequest(
                    "A tool message needs the tool_call_id of the call it answers.",
                    param=f"messages[{i}].tool_call_id",
                )
            name = calls.answered(call_id, f"messages[{i}].tool_call_id")
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
        turns.append(
            ChatTurn(
                role,
                content.joined,
                tuple(made),
                call_id,
                name,
                thought,
                tuple(content.images),
                tuple(content.audio),
            )
        )
    return turns


def _content(message: ChatMessage, i: int) -> Content:
    """A message's text parts and images, in order."""
    content = Content(message.role, AS_SENT)
    if message.audio is not None and message.role == "assistant" and not message.content:
        content.stored_text(transcript_of(message.audio.id, f"messages[{i}].audio.id"))
        return content  # an earlier spoken answer, handed back by its id
    if message.audio is not None:
        raise InvalidRequest(
            "'audio' hands back an assistant's spoken answer, in an assistant message without "
            "content.",
            param=f"messages[{i}].audio",
        )
    if not isinstance(message.content, list):
        content.text(message.content or "", f"messages[{i}].content")
        return content
    for j, part in enumerate(message.content):
        param = f"messages[{i}].content[{j}]"
        if part.type in ("text", "input_text"):
            content.text(part.text or "", f"{param}.text")
        elif part.type == "image_url" and part.image_url is not None:
            content.image(part.image_url.url, part.image_url.detail, param)
        elif part.type == "input_audio" and part.input_audio is not None:
            content.sound(part.input_audio.data, part.input_audio.format, param)
        else:
            raise unsupported(part.type, "text, image_url and input_audio parts", f"{param}.type")
    return content


def _chat(
    conversation: ConversationRequest, request: ChatCompletionRequest, store: ModelStore
) -> Iterator[ChatCompletionChunk]:
    """Every chat, streamed or not, is this stream of chunks; errors come before the first."""
    chunk_id, created = new_id("chatcmpl-"), int(time.time())
    renderer = _Chunks(conversation.plan, conversation.top_logprobs)
    fingerprint = ""

    def chunk(choices: list[ChatChunkChoice], **extra: object) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=chunk_id,
            created=created,
            model=request.model,
            choices=choices,
            system_fingerprint=fingerprint,
            **extra,
        )

    for event in generate(conversation, store):
        if isinstance(event, events.Started):
            fingerprint = event.fingerprint
        if isinstance(event, events.TokenUsage):
            if request.include_usage or not request.stream:
                usage = Usage(
                    prompt_tokens=event.prompt_tokens,
                    completion_tokens=event.completion_tokens,
                    total_tokens=event.total_tokens,
                )
                yield chunk([], usage=usage)
            continue
        for choice in renderer.render(event):
            yield chunk([choice])


class _Chunks:
    """Events as chunk choices. A choice's first delta carries the role: with content "" at
    once for a text answer; with tools, together with the first content or call, so that a
    call's message has no content at all (`null`, as OpenAI's). A call's first delta carries
    its index, id, type and name; the ones after it only argument text."""

    def __init__(self, plan: ChatPlan, top: int | None) -> None:
        self._tools = plan.mode != "none"
        self._legacy = plan.legacy_functions
        self._top = top
        self._opened: set[int] = set()

    def render(self, event: events.Event) -> Iterator[ChatChunkChoice]:
        if isinstance(event, events.Started):
            if not self._tools:
                yield self._open(0, ChoiceDelta(content=""))
            return
        choice = getattr(event, "choice", 0)
        if isinstance(event, events.TextDelta):
            logprobs = chat_logprobs(event.logprobs) if self._top is not None else None
            delta = ChoiceDelta(content=event.text)
        elif isinstance(event, events.ReasoningDelta):
            delta, logprobs = ChoiceDelta(reasoning_content=event.text), None
        elif isinstance(event, events.ToolCallStarted | events.ArgumentsDelta):
            delta, logprobs = self._call_delta(event), None
        elif isinstance(event, events.Finished):
            if choice not in self._opened:
                yield self._open(choice, ChoiceDelta(content=""))
            reason = {"stop_sequence": "stop"}.get(event.reason, event.reason)
            if reason == "tool_calls" and self._legacy:
                reason = "function_call"
            yield ChatChunkChoice(index=choice, delta=ChoiceDelta(), finish_reason=reason)
            return
        else:
            return
        if choice not in self._opened:
            if not self._tools:
                yield self._open(choice, ChoiceDelta(content=""))
            else:
                self._opened.add(choice)
                delta = delta.model_copy(update={"role": "assistant"})
        yield ChatChunkChoice(index=choice, delta=delta, logprobs=logprobs)

    def _call_delta(self, event: events.ToolCallStarted | events.ArgumentsDelta) -> ChoiceDelta:
        """A call's first delta (its id, type and name) or one of its argument fragments."""
        if isinstance(event, events.ToolCallStarted):
            function = FunctionCallDelta(name=event.name, arguments="")
            call = ToolCallDelta(
                index=event.index, id=event.call_id, type="function", function=function
            )
        else:
            function = FunctionCallDelta(arguments=event.text)
            call = ToolCallDelta(index=event.index, function=function)
        if self._legacy:
            return ChoiceDelta(function_call=function)
        return ChoiceDelta(tool_calls=[call])

    def _open(self, choice: int, delta: ChoiceDelta) -> ChatChunkChoice:
        self._opened.add(choice)
        return ChatChunkChoice(index=choice, delta=delta.model_copy(update={"role": "assistant"}))


def _collect(chunks: Iterator[ChatCompletionChunk]) -> ChatCompletion:
    """The stream gathered back into one response: content joined, calls assembled."""
    messages: dict[int, _Message] = {}
    last = None
    for last in chunks:
        for choice in last.choices:
            messages.setdefault(choice.index, _Message()).add(choice)
    assert last is not None and last.usage is not None
    return ChatCompletion(
        id=last.id,
        created=last.created,
        model=last.model,
        choices=[m.choice(i) for i, m in sorted(messages.items())],
        usage=last.usage,
        system_fingerprint=last.system_fingerprint,
    )


class _Message:
    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.audio: dict[str, Any] = {}  # a spoken answer's id, expires_at; data, transcript
        self.calls: dict[int, ToolCall] = {}
        self.function_call: FunctionCall | None = None
        self.logprobs: ChoiceLogprobs | None = None
        self.finish_reason = "stop"

    def add(self, choice: ChatChunkChoice) -> None:
        delta = choice.delta
        if delta.content:
            self.content.append(delta.content)
        if delta.reasoning_content:
            self.reasoning.append(delta.reasoning_content)
        if delta.audio is not None:
            for name, value in delta.audio.model_dump(exclude_none=True).items():
                if name in ("data", "transcript"):
                    self.audio.setdefault(name, []).append(value)
                else:
                    self.audio[name] = value
        for call in delta.tool_calls or []:
            if call.id is not None:
                self.calls[call.index] = ToolCall(
                    id=call.id, function=FunctionCall(name=call.function.name or "", arguments="")
                )
            else:
                self.calls[call.index].function.arguments += call.function.arguments or ""
        if delta.function_call is not None:
            if self.function_call is None:
                self.function_call = FunctionCall(name=delta.function_call.name or "", arguments="")
            else:
                self.function_call.arguments += delta.function_call.arguments or ""
        if choice.logprobs is not None:
            if self.logprobs is None:
                self.logprobs = ChoiceLogprobs(content=[])
            assert self.logprobs.content is not None
            self.logprobs.content.extend(choice.logprobs.content or [])
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason

    def _spoken(self) -> ChatAudio | None:
        """The spoken answer, its audio's base64 pieces joined as the bytes they encode."""
        if "id" not in self.audio:
            return None
        data = b"".join(base64.b64decode(piece) for piece in self.audio.get("data", []))
        return ChatAudio(
            id=self.audio["id"],
            data=base64.b64encode(data).decode(),
            expires_at=self.audio["expires_at"],
            transcript="".join(self.audio.get("transcript", [])),
        )

    def choice(self, index: int) -> ChatChoice:
        # A call cut mid-arguments (by the budget, or an engine that stopped) is left out.
        self.calls = {
            i: c
            for i, c in self.calls.items()
            if whole_arguments(c.function.arguments, LEFT_OUT) is not None
        }
        function = self.function_call
        if function is not None and whole_arguments(function.arguments, LEFT_OUT) is None:
            self.function_call = None
        called = bool(self.calls) or self.function_call is not None
        content = "".join(self.content)
        message = ResponseMessage(
            content=content if (content or not called) and "id" not in self.audio else None,
            tool_calls=[self.calls[i] for i in sorted(self.calls)] or None,
            function_call=self.function_call,
            reasoning_content="".join(self.reasoning) or None,
            audio=self._spoken(),
        )
        return ChatChoice(
            index=index, message=message, logprobs=self.logprobs, finish_reason=self.finish_reason
        )
