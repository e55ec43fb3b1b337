"""POST /v1/responses and the stored responses: the conversation's events rendered as OpenAI's
Responses API (a response object, or its semantic events when streamed), kept in the response
store when `store` is true so that `previous_response_id` continues it on any worker."""

from __future__ import annotations

import collections
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from common import metering
from common.errors import ClientGone, InvalidRequest, NotFound, StratusError
from common.protocol.base import new_id
from common.protocol.responses import (
    ArgumentsDeltaEvent,
    ArgumentsDoneEvent,
    ContentPartEvent,
    DeletedResponse,
    DeltaEvent,
    FunctionCallItem,
    IncompleteDetails,
    InputItemList,
    Logprob,
    MessageItem,
    OutputItemEvent,
    OutputText,
    ReasoningItem,
    ReasoningText,
    Response,
    ResponseErrorDetail,
    ResponseLifecycleEvent,
    ResponsesRequest,
    ResponseUsage,
    StreamEvent,
    TextDeltaEvent,
    TextDoneEvent,
)
from common.sealed import Unsealed
from common.store import ModelStore
from handlers._logprobs import chat_logprobs
from handlers._response_items import Tools, normalise, read_tools, turns_of
from handlers.conversation import events
from handlers.conversation.generate import Generation, generate
from handlers.conversation.plan import NamedChoice, make_plan
from layers import text

# The stored document's keys: this response, its input items, and the items of the turns
# before it (previous_response_id's chain, resolved when it was made: one read per turn).
RESPONSE, INPUT, HISTORY = "response", "input_items", "history"


def create_response(job: Any, store: ModelStore) -> Response | Iterator[StreamEvent]:
    """`job` is the adapter's Stateful: the request, the response store and its owner."""
    request: ResponsesRequest = job.request
    history: list[dict[str, Any]] = []
    if request.previous_response_id is not None:
        earlier = _get(job, request.previous_response_id, "previous_response_id")
        history = [*earlier[HISTORY], *earlier[INPUT], *earlier[RESPONSE]["output"]]
    seal, unseal = _blobs(job)
    items = normalise(request.input, unseal)
    tools = read_tools(request.tools)
    generation = _generation(request, history, items, tools)
    response = _initial(request, tools)
    sealed = "reasoning.encrypted_content" in (request.include or ())
    obfuscate = request.stream_options is None or request.stream_options.include_obfuscation
    renderer = _Renderer(
        response, tools, request.stream, seal if sealed else None, obfuscate is not False
    )

    def finish(final: Response) -> None:
        if request.store:  # a turn not written is an error, never a success
            document = {RESPONSE: final.model_dump(mode="json"), INPUT: items, HISTORY: history}
            job.responses.put(final.id, job.owner, document)

    stream = renderer.render(generate(generation, store), finish)
    if request.stream:
        return stream
    (last,) = collections.deque(stream, maxlen=1)  # the whole stream runs; its end says all
    assert isinstance(last, ResponseLifecycleEvent)
    return last.response


def _blobs(job: Any) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """Sealing a turn's reasoning for the caller, and reading it back: a blob names its owner,
    so one made for another key is refused like a forged one."""

    def seal(text: str) -> str:
        return job.sealer.seal({"owner": job.owner, "text": text})

    def unseal(blob: str) -> str:
        payload = job.sealer.unseal(blob)
        if not isinstance(payload, dict) or payload.get("owner") != job.owner:
            raise Unsealed("another caller's blob")
        return str(payload.get("text", ""))

    return seal, unseal


def retrieve_response(job: Any, store: ModelStore) -> Response:
    return Response.model_validate(_get(job, job.request, "response_id")[RESPONSE])


def delete_response(job: Any, store: ModelStore) -> DeletedResponse:
    job.responses.delete(job.request, job.owner)
    return DeletedResponse(id=job.request)


def list_input_items(job: Any, store: ModelStore) -> InputItemList:
    """This response's input items: newest first unless `order` is asc; `limit` (1-100, 20)
    items after the item `after`."""
    response_id, query = job.request
    items = list(_get(job, response_id, "response_id")[INPUT])
    if query["order"] == "desc":
        items.reverse()
    if query["after"] is not None:
        ids = [item["id"] for item in items]
        if query["after"] not in ids:
            raise NotFound(f"No input item '{query['after']}' in this response.", param="after")
        items = items[ids.index(query["after"]) + 1 :]
    page = items[: query["limit"]]
    return InputItemList(
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=len(items) > len(page),
    )


def _get(job: Any, response_id: str, param: str) -> dict[str, Any]:
    try:
        return job.responses.get(response_id, job.owner)
    except NotFound as missing:
        raise NotFound(missing.message, param=param, code=missing.code) from None


def _generation(
    request: ResponsesRequest,
    history: list[dict[str, Any]],
    items: list[dict[str, Any]],
    tools: Tools,
) -> Generation:
    turns = turns_of([*history, *items], request.instructions, first_param=len(history))
    choice: Any = request.tool_choice
    if choice is not None and not isinstance(choice, str):
        choice = NamedChoice(choice.name)
    text_format = request.text.format if request.text and request.text.format else None
    output: tuple[Any, Mapping[str, Any] | None] = ("text", None)
    if text_format is not None and text_format.type != "text":
        output = (text_format.type, text_format.json_schema)
    plan = make_plan(
        turns,
        tools.specs,
        choice,
        parallel=request.parallel_tool_calls is not False,
        output=output,
        format_param="text.format",
        schema_param="text.format.schema",
    )
    logprobs = request.top_logprobs is not None or "message.output_text.logprobs" in (
        request.include or ()
    )
    return Generation(
        model=request.model,
        plan=plan,
        sampling={"temperature": request.temperature, "top_p": request.top_p},
        budget=request.max_output_tokens,
        budget_is_ceiling=True,
        top_logprobs=(request.top_logprobs or 0) if logprobs else None,
        prompt_param="input",
        budget_param="max_output_tokens",
    )


def _initial(request: ResponsesRequest, tools: Tools) -> Response:
    text_format = request.text.format if request.text and request.text.format else None
    choice = request.tool_choice
    return Response(
        id=new_id("resp").replace("-", "_"),
        created_at=int(time.time()),
        status="in_progress",
        instructions=request.instructions,
        max_output_tokens=request.max_output_tokens,
        model=request.model,
        parallel_tool_calls=request.parallel_tool_calls is not False,
        previous_response_id=request.previous_response_id,
        reasoning=request.reasoning,
        store=request.store,
        temperature=request.temperature if request.temperature is not None else 1.0,
        text={"format": text_format.model_dump(by_alias=True, exclude_none=True)}
        if text_format
        else {"format": {"type": "text"}},
        tool_choice=(
            choice.model_dump()
            if choice is not None and not isinstance(choice, str)
            else choice or "auto"
        ),
        tools=tools.echoed,
        top_p=request.top_p if request.top_p is not None else 1.0,
        top_logprobs=request.top_logprobs,
        user=request.user,
        metadata=request.metadata or {},
    )


def _logprobs(tokens: tuple[text.TokenLogprob, ...]) -> list[Logprob]:
    return chat_logprobs(tokens).content or []


class _Renderer:
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

    def render(self, generated: Iterator[events.Event], finish: Any) -> Iterator[StreamEvent]:
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

    def _next(self, kind: type, **fields: Any) -> Any:
        if self._obfuscate and issubclass(kind, DeltaEvent):
            fields["obfuscation"] = secrets.token_urlsafe(12)[: 16 - len(fields["delta"]) % 16]
        self._sequence += 1
        return kind(sequence_number=self._sequence, **fields)

    def _copy(self) -> Response:
        return self.response.model_copy(deep=True)

    def _event(self, event: events.Event, finish: Any) -> Iterator[StreamEvent]:
        if isinstance(event, events.Started):
            yield self._next(ResponseLifecycleEvent, type="response.created", response=self._copy())
            yield self._next(
                ResponseLifecycleEvent, type="response.in_progress", response=self._copy()
            )
        elif isinstance(event, events.TextDelta | events.ReasoningDelta):
            yield from self._delta(event)
        elif isinstance(event, events.CallStarted):
            yield from self._close()
            namespace, name = self._tools.called(event.name)
            item = FunctionCallItem(
                id=new_id("fc").replace("-", "_"),
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
        elif isinstance(event, events.Usage):
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

    def _index(self, item: Any) -> int:
        return next(i for i, out in enumerate(self.response.output) if out is item)

    def _added(self, item: Any) -> Iterator[StreamEvent]:
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
                self._open = ReasoningItem(id=new_id("rs").replace("-", "_"), status="in_progress")
                part: Any = ReasoningText(text="")
            else:
                self._open = MessageItem(
                    id=new_id("msg").replace("-", "_"), status="in_progress", content=[]
                )
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
            part: Any = ReasoningText(text=text)
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


def input_items_query(params: Mapping[str, str]) -> dict[str, Any]:
    """GET .../input_items' query: limit (1-100, default 20), order (asc|desc), after."""
    raw_limit = params.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise InvalidRequest("'limit' must be an integer from 1 to 100.", param="limit")
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be asc or desc.", param="order")
    return {"limit": int(raw_limit), "order": order, "after": params.get("after")}
