"""POST /v1/chat/completions."""

from __future__ import annotations

import time
from collections.abc import Iterator

from common import metering
from common.protocol.base import new_id
from common.protocol.chat import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceDelta,
    ChoiceLogprobs,
    FunctionCall,
    FunctionCallDelta,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
)
from common.store import ModelStore
from handlers._chat_plan import ChatPlan, chat_plan
from handlers._generation import (
    Piece,
    TextGeneration,
    UsageCounter,
    check_context,
    check_logit_bias,
    check_prompt_size,
    check_total_work,
    sampling_for,
    text_model,
    token_budget,
)
from handlers._logprobs import chat_logprobs
from handlers._stop import StopMatcher
from layers import tool_calls


def create_chat_completion(
    request: ChatCompletionRequest, store: ModelStore
) -> ChatCompletion | Iterator[ChatCompletionChunk]:
    stream = _chat(request, store)
    if request.stream:
        return stream
    return _collect(stream)


def _chat(request: ChatCompletionRequest, store: ModelStore) -> Iterator[ChatCompletionChunk]:
    """Every chat, streamed or not, is this stream of chunks; errors come before the first."""
    plan = chat_plan(request)
    with store.use(request.model) as loaded:
        model = text_model(loaded, request.model)
        config = store.registry.resolve(request.model)
        sent = sum(len(turn.content.encode()) for turn in plan.turns)
        check_prompt_size(model, sent, "messages")
        prompt = model.chat_prompt(plan.turns, plan.tools)
        budget = token_budget(request.token_budget, config.parameters)
        param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        named = request.token_budget is not None
        # A budget the client did not name (the model's or the operator's default) is cut to
        # the room the prompt leaves, as OpenAI's default (the rest of the context) is.
        check_context(
            model,
            len(prompt),
            budget if named else None,
            prompt_param="messages",
            budget_param=param,
        )
        check_total_work(
            model,
            [len(prompt)],
            request.n,
            budget,
            param,
            choices_param="n",
            budget_named=named,
        )
        check_logit_bias(model, request)

        chunk_id, created = new_id("chatcmpl"), int(time.time())
        usage = UsageCounter(prompt_tokens=len(prompt))
        metering.count("prompt_tokens", len(prompt))  # output tokens count as generated

        def chunk(choices: list[ChatChunkChoice], **extra: object) -> ChatCompletionChunk:
            return ChatCompletionChunk(
                id=chunk_id,
                created=created,
                model=request.model,
                choices=choices,
                system_fingerprint=model.fingerprint,
                **extra,
            )

        top = (request.top_logprobs or 0) if request.logprobs else None
        stops = request.stop_sequences
        # All choices start now and run side by side; they are read one after the other.
        generations = [
            TextGeneration(
                model,
                prompt,
                sampling_for(request, config.parameters, choice=index),
                budget,
                () if plan.mode != "none" else stops,
                grammar=plan.grammar,
                logprobs=top,
            )
            for index in range(request.n)
        ]
        try:
            for index, generation in enumerate(generations):
                answer = _Answer(plan, stops) if plan.mode != "none" else None
                for delta, logprobs in _deltas(generation, answer, top):
                    yield chunk([ChatChunkChoice(index=index, delta=delta, logprobs=logprobs)])
                usage.completion_tokens += generation.completion_tokens
                reason = generation.finish_reason or "stop"
                if answer and answer.calls and reason != "length":
                    reason = "function_call" if plan.legacy_functions else "tool_calls"
                finish = ChatChunkChoice(index=index, delta=ChoiceDelta(), finish_reason=reason)
                yield chunk([finish])
        finally:
            for generation in generations:
                generation.close()
        if request.include_usage or not request.stream:
            yield chunk([], usage=usage.usage())


def _deltas(
    generation: TextGeneration, answer: _Answer | None, top: int | None
) -> Iterator[tuple[ChoiceDelta, ChoiceLogprobs | None]]:
    """One choice's deltas. The first carries the role: with content "" at once for a text
    answer; with tools, together with the first content or call, so that a call's message
    has no content at all (`null`, as OpenAI's)."""
    if answer is None:
        yield ChoiceDelta(role="assistant", content=""), None
        for piece in generation:
            yield ChoiceDelta(content=piece.text), _logprobs(piece, top)
        return
    first = True
    for piece in generation:
        for delta, scored in answer.deltas(piece):
            if first:
                delta, first = delta.model_copy(update={"role": "assistant"}), False
            yield delta, _logprobs(scored, top)
        if answer.stopped:
            break
    for delta, _ in answer.finish():
        if first:
            delta, first = delta.model_copy(update={"role": "assistant"}), False
        yield delta, None
    if first:
        yield ChoiceDelta(role="assistant", content=""), None


def _logprobs(piece: Piece, top: int | None) -> ChoiceLogprobs | None:
    return chat_logprobs(piece.tokens) if top is not None else None


class _Answer:
    """Generated text split into content and tool calls, as OpenAI's deltas: a call's first
    delta carries its index, id, type and name; the ones after it only argument text."""

    def __init__(self, plan: ChatPlan, stops: list[str]) -> None:
        self._parser = tool_calls.ToolCallParser()
        self._legacy = plan.legacy_functions
        self._stops = StopMatcher(stops)  # they end text answers; calls end by the grammar
        self.stopped = False
        self.calls = 0

    def deltas(self, piece: Piece) -> list[tuple[ChoiceDelta, Piece]]:
        return self._deltas(self._parser.feed(piece.text), piece)

    def finish(self) -> list[tuple[ChoiceDelta, Piece]]:
        out = self._deltas(self._parser.finish(), Piece(""))
        if not self.stopped and (held := self._stops.flush()):
            out.append((ChoiceDelta(content=held), Piece(held)))
        return out

    def _deltas(self, events, piece: Piece) -> list[tuple[ChoiceDelta, Piece]]:
        out: list[tuple[ChoiceDelta, Piece]] = []
        for event in events:
            if self.stopped:
                break
            if isinstance(event, tool_calls.Text):
                text, self.stopped = self._stops.feed(event.text)
                if text:
                    out.append((ChoiceDelta(content=text), piece))
            elif isinstance(event, tool_calls.CallStarted):
                self.calls += 1
                out.append((self._call_delta(event.index, event.name), Piece("")))
            else:
                out.append((self._arguments_delta(event.index, event.text), Piece("")))
        return out

    def _call_delta(self, index: int, name: str) -> ChoiceDelta:
        function = FunctionCallDelta(name=name, arguments="")
        if self._legacy:
            return ChoiceDelta(function_call=function)
        call_id = new_id("call").replace("-", "_")
        return ChoiceDelta(
            tool_calls=[ToolCallDelta(index=index, id=call_id, type="function", function=function)]
        )

    def _arguments_delta(self, index: int, text: str) -> ChoiceDelta:
        function = FunctionCallDelta(arguments=text)
        if self._legacy:
            return ChoiceDelta(function_call=function)
        return ChoiceDelta(tool_calls=[ToolCallDelta(index=index, function=function)])


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
        self.calls: dict[int, ToolCall] = {}
        self.function_call: FunctionCall | None = None
        self.logprobs: ChoiceLogprobs | None = None
        self.finish_reason = "stop"

    def add(self, choice: ChatChunkChoice) -> None:
        delta = choice.delta
        if delta.content:
            self.content.append(delta.content)
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

    def choice(self, index: int) -> ChatChoice:
        called = bool(self.calls) or self.function_call is not None
        content = "".join(self.content)
        message = ResponseMessage(
            content=content if content or not called else None,
            tool_calls=[self.calls[i] for i in sorted(self.calls)] or None,
            function_call=self.function_call,
        )
        return ChatChoice(
            index=index, message=message, logprobs=self.logprobs, finish_reason=self.finish_reason
        )
