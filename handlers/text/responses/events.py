"""The Responses API's streamed events, rendered from the neutral events of a generation: each
with the next sequence_number, in OpenAI's order (response.created, .in_progress, then per output
item .output_item.added, its content part, deltas, .done events, and .completed, .incomplete or
.failed), with the whole response object kept alongside (the last event carries it)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from common import metering
from common.errors import ClientGone, StratusError
from common.protocol.base import new_id
from common.protocol.responses import (
    ArgumentsDeltaEvent,
    ArgumentsDoneEvent,
    ContentPartEvent,
    DeltaEvent,
    FunctionCallItem,
    IncompleteDetails,
    Logprob,
    MessageItem,
    OutputItem,
    OutputItemEvent,
    OutputText,
    ReasoningItem,
    ReasoningText,
    Response,
    ResponseErrorDetail,
    ResponseLifecycleEvent,
    ResponseUsage,
    StreamEvent,
    TextDeltaEvent,
    TextDoneEvent,
)
from common.turns import TokenLogprob
from handlers.text.conversation import events
from handlers.text.logprobs import chat_logprobs
from handlers.text.responses.items import Tools

AnyEvent = TypeVar("AnyEvent", bound=StreamEvent)


def _logprobs(tokens: tuple[TokenLogprob, ...]) -> list[Logprob]:
    return chat_logprobs(tokens).content or []


class ResponseEvents:
    """Neutral events as the Responses API's semantic events, each with the next
    sequence_number; the response object kept whole alongside (the last event carries it)."""

    def __init__(
        self,
        response: Response,
        tools: Tools,
        streaming: bool,
        seal: Callable[[str], str] | None,
        obfuscate: bool = False,
    ) -> None:
        self.response = response
        self._tools = tools
        self._streaming = streaming
        self._seal = seal  # reasoning handed to the client as encrypted_content
        self._obfuscate = obfuscate and streaming
        self._sequence = -1
        self._open: MessageItem | ReasoningItem | None = None
        self._text: list[str] = []
        self._logprobs: list[Logprob] = []
        self._calls: dict[int, FunctionCallItem] = {}

    def render(
        self, generated: Iterator[events.Event], finish: Callable[[Response], None]
    ) -> Iterator[StreamEvent]:
        record = metering.current()
        try:
            for event in generated:
                yield from self._event(event, finish)
        except ClientGone:
            raise
        except StratusError as error:
            if not self._streaming or self._sequence < 0:
                raise  # before the stream began, or a whole answer: the status says it
            if record is not None:
                record.error = error.code or error.type
            self.response.status = "failed"
            self.response.error = ResponseErrorDetail(
                code=error.code or error.type, message=error.message
            )
            yield self._next(ResponseLifecycleEvent, type="response.failed", response=self._copy())
        finally:
            generated.close()  # type: ignore[attr-defined]

    def _next(self, kind: type[AnyEvent], **fields: Any) -> AnyEvent:
        if self._obfuscate and issubclass(kind, DeltaEvent):
            fields["obfuscation"] = secrets.token_urlsafe(12)[: 16 - len(fields["delta"]) % 16]
        self._sequence += 1
        return kind(sequence_number=self._sequence, **fields)

    def _copy(self) -> Response:
        return self.response.model_copy(deep=True)

    def _event(
        self, event: events.Event, finish: Callable[[Response], None]
    ) -> Iterator[StreamEvent]:
        if isinstance(event, events.Started):
            yield self._next(ResponseLifecycleEvent, type="response.created", response=self._copy())
            yield self._next(
                ResponseLifecycleEvent, type="response.in_progress", response=self._copy()
            )
        elif isinstance(event, events.TextDelta | events.ReasoningDelta):
            yield from self._delta(event)
        elif isinstance(event, events.ToolCallStarted):
            yield from self._close()
            namespace, name = self._tools.called(event.name)
            item = FunctionCallItem(
                id=new_id("fc_"),
                call_id=event.call_id,
                name=name,
                namespace=namespace,
                arguments="",
                status="in_progress",
            )
            self._calls[event.index] = item
            yield from self._added(item)
        elif isinstance(event, events.ArgumentsDelta):
            item = self._calls[event.index]
            yield self._next(
                ArgumentsDeltaEvent,
                item_id=item.id,
                output_index=self._index(item),
                delta=event.text,
            )
        elif isinstance(event, events.CallDone):
            item = self._calls[event.index]
            item.arguments, item.status = event.arguments, "completed"
            index = self._index(item)
            yield self._next(
                ArgumentsDoneEvent,
                item_id=item.id,
                output_index=index,
                name=item.name,
                arguments=event.arguments,
            )
            yield self._next(
                OutputItemEvent,
                type="response.output_item.done",
                output_index=index,
                item=item.model_copy(),
            )
        elif isinstance(event, events.Finished):
            incomplete = event.reason == "length"
            yield from self._close("incomplete" if incomplete else "completed")
            if incomplete:
                self.response.status = "incomplete"
                self.response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
            else:
                self.response.status = "completed"
        elif isinstance(event, events.TokenUsage):
            self.response.usage = ResponseUsage(
                input_tokens=event.prompt_tokens,
                output_tokens=event.completion_tokens,
                total_tokens=event.total_tokens,
            )
            if self.response.status == "completed":
                self.response.completed_at = int(time.time())
            finish(self.response)
            kind = f"response.{self.response.status}"
            yield self._next(ResponseLifecycleEvent, type=kind, response=self._copy())

    def _index(self, item: OutputItem) -> int:
        return next(i for i, out in enumerate(self.response.output) if out is item)

    def _added(self, item: OutputItem) -> Iterator[StreamEvent]:
        self.response.output.append(item)
        yield self._next(
            OutputItemEvent,
            type="response.output_item.added",
            output_index=len(self.response.output) - 1,
            item=item.model_copy(deep=True),
        )

    def _delta(self, event: events.TextDelta | events.ReasoningDelta) -> Iterator[StreamEvent]:
        reasoning = isinstance(event, events.ReasoningDelta)
        wanted = ReasoningItem if reasoning else MessageItem
        if not isinstance(self._open, wanted):
            yield from self._close()
            if reasoning:
                self._open = ReasoningItem(id=new_id("rs_"), status="in_progress")
                part: ReasoningText | OutputText = ReasoningText(text="")
            else:
                self._open = MessageItem(id=new_id("msg_"), status="in_progress", content=[])
                part = OutputText(text="")
            yield from self._added(self._open)
            yield self._next(
                ContentPartEvent,
                type="response.content_part.added",
                item_id=self._open.id,
                output_index=self._index(self._open),
                content_index=0,
                part=part,
            )
        logprobs = [] if reasoning else _logprobs(event.logprobs)  # type: ignore[union-attr]
        self._text.append(event.text)
        self._logprobs += logprobs
        yield self._next(
            TextDeltaEvent,
            type="response.reasoning_text.delta" if reasoning else "response.output_text.delta",
            item_id=self._open.id,
            output_index=self._index(self._open),
            content_index=0,
            delta=event.text,
            logprobs=logprobs,
        )

    def _close(self, status: str = "completed") -> Iterator[StreamEvent]:
        item, self._open = self._open, None
        if item is None:
            return
        text, self._text = "".join(self._text), []
        logprobs, self._logprobs = self._logprobs, []
        index = self._index(item)
        if isinstance(item, ReasoningItem):
            part: ReasoningText | OutputText = ReasoningText(text=text)
            item.content = [part]
            if self._seal is not None:
                item.encrypted_content = self._seal(text)
            done = "response.reasoning_text.done"
        else:
            part = OutputText(text=text, logprobs=logprobs)
            item.content = [part]
            done = "response.output_text.done"
        item.status = status  # type: ignore[assignment]
        yield self._next(
            TextDoneEvent,
            type=done,
            item_id=item.id,
            output_index=index,
            content_index=0,
            text=text,
            logprobs=logprobs if isinstance(item, MessageItem) else [],
        )
        yield self._next(
            ContentPartEvent,
            type="response.content_part.done",
            item_id=item.id,
            output_index=index,
            content_index=0,
            part=part,
        )
        yield self._next(
            OutputItemEvent,
            type="response.output_item.done",
            output_index=index,
            item=item.model_copy(deep=True),
        )
