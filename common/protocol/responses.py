"""POST /v1/responses (OpenAI's Responses API): request, response object, items and the
streamed events, field for field with OpenAI's spec.

Input items and tools arrive as JSON objects and are read item by item by the handler, so that
a bad one is refused naming its own place (`input[3].call_id`), and tool types Stratus cannot
run are skipped rather than refusing the request.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator

from common.protocol.base import (
    OpenAIRequest,
    OpenAIResponse,
    Probability,
    Sparse,
    Temperature,
    absent_when_none,
    extension,
)
from common.protocol.chat import FunctionName, TokenLogprob

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]


class ReasoningParam(OpenAIRequest):
    effort: ReasoningEffort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None  # deprecated name


class TextFormat(OpenAIRequest):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: FunctionName | None = None
    description: str | None = None
    # `schema` would shadow pydantic's BaseModel.schema.
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextParam(OpenAIRequest):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class StreamOptions(OpenAIRequest):
    include_obfuscation: bool | None = None


class FunctionChoice(OpenAIRequest):
    type: Literal["function"]
    name: str


class FunctionTool(OpenAIRequest):
    type: Literal["function"]
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


def checked_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    """OpenAI's rule for `metadata`: at most 16 pairs, keys of up to 64 characters, values of
    up to 512."""
    if value is not None and (
        len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())
    ):
        raise ValueError("at most 16 pairs, keys of up to 64 and values of up to 512 characters")
    return value


class ConversationParam(OpenAIRequest):
    id: str = Field(min_length=1)


class ConversationRef(OpenAIResponse):
    id: str


class ResponsesRequest(OpenAIRequest):
    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextParam | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    reasoning: ReasoningParam | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None  # Stratus caches prompt prefixes by itself
    stream: bool = False
    stream_options: StreamOptions | None = None
    store: bool = True
    previous_response_id: str | None = None
    include: list[str] | None = None
    truncation: Literal["disabled"] | None = None
    service_tier: Literal["auto", "default", "flex", "priority", "scale"] | None = None
    background: Literal[False] | None = None
    max_tool_calls: None = None
    # A conversation (POST /v1/conversations) this response continues: its items come first,
    # and this response's input and output are added to it.
    conversation: str | ConversationParam | None = None
    prompt: None = None
    # Codex's: what the client is, for the server's own records; Stratus keeps none.
    client_metadata: dict[str, Any] | None = extension()

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return checked_metadata(value)

    @field_validator("include")
    @classmethod
    def _include(cls, value: list[str] | None) -> list[str] | None:
        known = {"reasoning.encrypted_content", "message.output_text.logprobs"}
        for name in value or []:
            if name not in known:
                raise ValueError(f"'{name}' cannot be included here (only {sorted(known)})")
        return value


# ---- the response object and its items -------------------------------------------------


# A token's log probability and its alternatives: the same shape as chat's.
Logprob = TokenLogprob


class OutputText(OpenAIResponse):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Logprob] = Field(default_factory=list)


class MessageItem(OpenAIResponse):
    type: Literal["message"] = "message"
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class FunctionCallItem(Sparse):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    namespace: str | None = None
    arguments: str
    status: ItemStatus

    absent: ClassVar = ("namespace",)
    model_config = absent_when_none(*absent)


class SummaryText(OpenAIResponse):
    type: Literal["summary_text"] = "summary_text"
    text: str


class ReasoningText(OpenAIResponse):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningItem(Sparse):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] = Field(default_factory=list)
    encrypted_content: str | None = None
    status: ItemStatus

    absent: ClassVar = ("encrypted_content",)
    model_config = absent_when_none(*absent)


OutputItem = MessageItem | FunctionCallItem | ReasoningItem


class InputTokensDetails(OpenAIResponse):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(OpenAIResponse):
    reasoning_tokens: int = 0


class ResponseUsage(OpenAIResponse):
    input_tokens: int
    input_tokens_details: InputTokensDetails = InputTokensDetails()
    output_tokens: int
    output_tokens_details: OutputTokensDetails = OutputTokensDetails()
    total_tokens: int


class ResponseErrorDetail(OpenAIResponse):
    code: str
    message: str


class IncompleteDetails(OpenAIResponse):
    reason: Literal["max_output_tokens", "content_filter"]


class Response(Sparse):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]
    error: ResponseErrorDetail | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: ReasoningParam | None = None
    store: bool = True
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: Any = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_p: float | None = None
    top_logprobs: int | None = None
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    service_tier: str = "default"
    background: bool = False
    conversation: ConversationRef | None = None

    absent: ClassVar = ("user", "usage", "conversation")
    model_config = absent_when_none(*absent)


class StoredItem(OpenAIResponse):
    """An item as stored (a message, a function call or its output, reasoning): its fields as
    the store has them."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), defer_build=True)
    id: str
    type: str


class DeletedResponse(OpenAIResponse):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: Literal[True] = True


class InputItemList(OpenAIResponse):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


# ---- streamed events ---------------------------------------------------------------------


class StreamEvent(OpenAIResponse):
    type: str
    sequence_number: int


class ResponseLifecycleEvent(StreamEvent):
    """response.created, .in_progress, .completed, .incomplete, .failed: the whole response."""

    type: Literal[
        "response.created",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    ]
    response: Response


class OutputItemEvent(StreamEvent):
    type: Literal["response.output_item.added", "response.output_item.done"]
    output_index: int
    item: OutputItem


class ContentPartEvent(StreamEvent):
    type: Literal["response.content_part.added", "response.content_part.done"]
    item_id: str
    output_index: int
    content_index: int
    part: OutputText | ReasoningText


class DeltaEvent(StreamEvent, Sparse):
    """A streamed fragment; `obfuscation` pads it with random characters (unless the request's
    stream_options.include_obfuscation is false) so that its size does not tell its text."""

    item_id: str
    output_index: int
    delta: str
    obfuscation: str | None = None

    absent: ClassVar = ("obfuscation",)
    model_config = absent_when_none(*absent)


class TextDeltaEvent(DeltaEvent):
    type: Literal["response.output_text.delta", "response.reasoning_text.delta"]
    content_index: int
    logprobs: list[Logprob] = Field(default_factory=list)


class TextDoneEvent(StreamEvent):
    type: Literal["response.output_text.done", "response.reasoning_text.done"]
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Logprob] = Field(default_factory=list)


class ArgumentsDeltaEvent(DeltaEvent):
    type: Literal["response.function_call_arguments.delta"] = (
        "response.function_call_arguments.delta"
    )


class ArgumentsDoneEvent(StreamEvent):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    item_id: str
    output_index: int
    name: str
    arguments: str


ResponseStreamEvent = (
    ResponseLifecycleEvent
    | OutputItemEvent
    | ContentPartEvent
    | TextDeltaEvent
    | TextDoneEvent
    | ArgumentsDeltaEvent
    | ArgumentsDoneEvent
)
