"""POST /v1/responses: the conversation's events rendered as OpenAI's Responses API (a response
object, or its semantic events when streamed), kept in the response store when `store` is true
so that `previous_response_id` continues it on any worker (stored.py reads them back)."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from typing import Any

from common.errors import InvalidRequest
from common.image_input import ImageLimits
from common.protocol.base import new_id
from common.protocol.chat import REASONING_BUDGETS
from common.protocol.responses import (
    ConversationRef,
    Response,
    ResponseLifecycleEvent,
    ResponsesRequest,
    StreamEvent,
)
from common.response_store import serialise
from common.store import ModelStore
from handlers.text.conversation.generate import ConversationRequest, generate
from handlers.text.conversation.plan import NamedChoice, ToolChoice, make_plan, output_format
from handlers.text.responses import conversations
from handlers.text.responses.events import ResponseEvents
from handlers.text.responses.items import Tools, normalise, read_tools, turns_of
from handlers.text.responses.stored import (
    HISTORY,
    INPUT,
    RESPONSE,
    Stored,
    blobs,
    stored_response,
)


def create_response(
    stateful: Stored[ResponsesRequest], store: ModelStore, images: ImageLimits | None = None
) -> Response | Iterator[StreamEvent]:
    """`stateful` is the adapter's Stateful: the request, the response store and its owner;
    `images`: how images in the input are read (the adapter's limits; defaults else)."""
    request: ResponsesRequest = stateful.request
    history: list[dict[str, Any]] = []
    thread = _conversation_id(request)
    kept = conversations.read_conversation(stateful, thread, "conversation") if thread else None
    if request.previous_response_id is not None:
        earlier = stored_response(stateful, request.previous_response_id, "previous_response_id")
        history = [*earlier[HISTORY], *earlier[INPUT], *earlier[RESPONSE]["output"]]
    elif kept is not None:
        history = kept[conversations.ITEMS]
    seal, unseal = blobs(stateful)
    items = normalise(request.input, unseal)
    if request.store:  # a conversation too large to keep is refused before it is generated
        serialise({INPUT: items, HISTORY: history}, stateful.responses.max_bytes)
    if kept is not None:
        conversations.check_room(stateful, kept, items)
    tools = read_tools(request.tools)
    conversation = _conversation(request, history, items, tools, images or ImageLimits())
    response = _initial(request, tools)
    sealed = "reasoning.encrypted_content" in (request.include or ())
    obfuscate = request.stream_options is None or request.stream_options.include_obfuscation
    renderer = ResponseEvents(
        response, tools, request.stream, seal if sealed else None, obfuscate is not False
    )

    def finish(final: Response) -> None:
        document = {RESPONSE: final.model_dump(mode="json"), INPUT: items, HISTORY: history}
        if request.store:  # a turn not written is an error, never a success
            stateful.responses.put(final.id, stateful.owner, document)
        if thread is not None:
            conversations.append_turn(stateful, thread, [*items, *document[RESPONSE]["output"]])

    stream = renderer.render(generate(conversation, store), finish)
    if request.stream:
        return stream
    (last,) = collections.deque(stream, maxlen=1)  # the whole stream runs; its end says all
    assert isinstance(last, ResponseLifecycleEvent)
    return last.response


def _conversation_id(request: ResponsesRequest) -> str | None:
    """The conversation the response continues (an id, or `{id}`), if any; with
    previous_response_id a 400, as the two would say two different histories."""
    asked = request.conversation
    if asked is None:
        return None
    if request.previous_response_id is not None:
        raise InvalidRequest(
            "Give 'conversation' or 'previous_response_id', not both.", param="conversation"
        )
    return asked if isinstance(asked, str) else asked.id


def _conversation(
    request: ResponsesRequest,
    history: list[dict[str, Any]],
    items: list[dict[str, Any]],
    tools: Tools,
    images: ImageLimits,
) -> ConversationRequest:
    turns = turns_of([*history, *items], request.instructions, first_param=len(history))
    asked = request.tool_choice
    choice: ToolChoice = (
        asked if asked is None or isinstance(asked, str) else NamedChoice(asked.name)
    )
    text_format = request.text.format if request.text and request.text.format else None
    output = output_format(
        text_format.type if text_format else None, text_format.json_schema if text_format else None
    )
    plan = make_plan(
        turns,
        tools.specs,
        choice,
        parallel=request.parallel_tool_calls is not False,
        output=output,
        format_param="text.format",
        schema_param="text.format.schema",
    )
    effort = request.reasoning.effort if request.reasoning else None
    logprobs = request.top_logprobs is not None or "message.output_text.logprobs" in (
        request.include or ()
    )
    return ConversationRequest(
        model=request.model,
        plan=plan,
        sampling={"temperature": request.temperature, "top_p": request.top_p},
        budget=request.max_output_tokens,
        budget_is_ceiling=True,
        top_logprobs=(request.top_logprobs or 0) if logprobs else None,
        prompt_param="input",
        budget_param="max_output_tokens",
        thinking=effort != "none",
        reasoning_budget=REASONING_BUDGETS.get(effort or ""),
        reasoning_effort=effort,
        image_limits=images,
    )


def _initial(request: ResponsesRequest, tools: Tools) -> Response:
    text_format = request.text.format if request.text and request.text.format else None
    choice = request.tool_choice
    return Response(
        id=new_id("resp_"),
        created_at=int(time.time()),
        status="in_progress",
        instructions=request.instructions,
        max_output_tokens=request.max_output_tokens,
        model=request.model,
        parallel_tool_calls=request.parallel_tool_calls is not False,
        previous_response_id=request.previous_response_id,
        conversation=ConversationRef(id=thread) if (thread := _conversation_id(request)) else None,
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
