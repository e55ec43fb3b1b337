"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API, field for field
with Anthropic's API reference: request, message, stream events and error envelope.

Requests accept blocks of any type (the handler says which a text model cannot read, naming
the block); `cache_control` anywhere is accepted and ignored: Stratus' prefix cache is
automatic.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from common.errors import StratusError
from common.protocol.base import MAX_STOP_LENGTH, OpenAIRequest, OpenAIResponse, Probability

# Anthropic's rule for tool names (MCP tools are `mcp__server__tool`).
ToolName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]
MAX_STOP_SEQUENCES = 16
StopSequence = Annotated[str, Field(min_length=1, max_length=MAX_STOP_LENGTH)]


class TextBlockParam(OpenAIRequest):
    """A text block: of `system`, or inside a tool result."""

    type: Literal["text"]
    text: str


class ToolResultBlockParam(OpenAIRequest):
    """A block of a tool result's content; only text blocks are read by a text model."""

    type: str
    text: str | None = None


class Base64ImageSource(OpenAIRequest):
    type: Literal["base64"]
    media_type: str
    data: str

    @property
    def address(self) -> str:
        """The image as a data: URL."""
        return f"data:{self.media_type};base64,{self.data}"


class UrlImageSource(OpenAIRequest):
    type: Literal["url"]
    url: str

    @property
    def address(self) -> str:
        return self.url


class ContentBlockParam(OpenAIRequest):
    """One block of a message's content. `text`, `image` (user), `tool_use` (assistant),
    `tool_result` (user) and `thinking` / `redacted_thinking` (assistant, left out of the
    prompt) are read; the handler refuses the others."""

    type: str
    text: str | None = None
    source: ImageSource | None = None  # image
    id: str | None = None  # tool_use
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None  # tool_result
    content: str | list[ToolResultBlockParam] | None = None
    is_error: bool | None = None
    thinking: str | None = None  # thinking, handed back with its signature
    signature: str | None = None
    data: str | None = None  # redacted_thinking

    @model_validator(mode="before")
    @classmethod
    def _image_sources_only(cls, data: Any) -> Any:
        # Documents have sources too (PDF, text); their blocks are refused by their type, not
        # by a source that is not an image's.
        if isinstance(data, dict) and data.get("type") != "image" and "source" in data:
            return {key: value for key, value in data.items() if key != "source"}
        return data

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> ContentBlockParam:
        needs = {"text": ("text",), "tool_use": ("id", "name", "input"),
                 "tool_result": ("tool_use_id",),
                 "image": ("source",)}.get(self.type, ())  # fmt: skip
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a '{self.type}' block needs '{missing[0]}'")
        return self


class MessageParam(OpenAIRequest):
    # "system" mid-conversation: Claude Code's mid-conversation-tool-changes beta sends one.
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlockParam]


class CustomToolParam(OpenAIRequest):
    """A function the model may call (type absent or `custom`)."""

    type: Literal["custom"] | None = None
    name: ToolName
    description: str | None = None
    input_schema: dict[str, Any]


class ServerToolParam(OpenAIRequest):
    """One of Anthropic's server tools (`bash_20250124`, `web_search_20250305`, ...): Stratus
    cannot run them, and leaves them out."""

    type: str
    name: str

    @field_validator("type")
    @classmethod
    def _not_custom(cls, value: str) -> str:
        if value == "custom":
            raise ValueError("a custom tool needs 'name' and 'input_schema'")
        return value


class ToolChoiceToolParam(OpenAIRequest):
    type: Literal["tool"]
    name: ToolName
    disable_parallel_tool_use: bool | None = None


class ToolChoiceParam(OpenAIRequest):
    type: Literal["auto", "any", "none"]
    disable_parallel_tool_use: bool | None = None


Display = Literal["summarized", "omitted"]


class ThinkingEnabledParam(OpenAIRequest):
    """Extended thinking: accepted and ignored by a model that does not reason, as Anthropic's
    own non-thinking models do."""

    type: Literal["enabled"]
    budget_tokens: Annotated[int, Field(ge=1024)]
    display: Display | None = None


class ThinkingParam(OpenAIRequest):
    type: Literal["disabled", "adaptive", "between_tools"]
    display: Display | None = None


class OutputFormatParam(OpenAIRequest):
    """Structured outputs: the answer is JSON valid under `schema` (enforced by grammar)."""

    type: Literal["json_schema"]
    # `schema` would shadow pydantic's BaseModel.schema.
    json_schema: dict[str, Any] = Field(alias="schema")


class OutputConfigParam(OpenAIRequest):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None  # a thinking budget
    format: OutputFormatParam | None = None


class MetadataParam(OpenAIRequest):
    user_id: str | None = None


def _by_type(*models: type[OpenAIRequest]) -> Any:
    """A union of request types told apart by their `type` (an error names the field, or the
    types there are, rather than each member's complaint)."""
    tags = {t: m.__name__ for m in models for t in get_args(m.model_fields["type"].annotation)}

    def tag(value: Any) -> str | None:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return tags.get(kind) if isinstance(kind, str) else None

    known = ", ".join(f"'{t}'" for t in tags)
    return Annotated[
        Union[tuple(Annotated[m, Tag(m.__name__)] for m in models)],  # noqa: UP007
        Discriminator(tag, custom_error_type="invalid_type",
                      custom_error_message=f"'type' must be one of {known}"),
    ]  # fmt: skip


ToolChoice = _by_type(ToolChoiceToolParam, ToolChoiceParam)
ImageSource = _by_type(Base64ImageSource, UrlImageSource)
Thinking = _by_type(ThinkingEnabledParam, ThinkingParam)


class MessageCountTokensRequest(OpenAIRequest):
    """The fields that make the prompt: count_tokens' body, and the base of a message's."""

    model: str = Field(min_length=1)
    messages: Annotated[list[MessageParam], Field(min_length=1)]
    system: str | list[TextBlockParam] | None = None
    tools: list[CustomToolParam | ServerToolParam] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfigParam | None = None
    context_management: dict[str, Any] | None = None  # old thinking is never in the prompt
    # Anthropic-hosted features that cannot be honoured here: refused unless empty.
    mcp_servers: Annotated[list[dict[str, Any]], Field(max_length=0)] | None = None
    container: None = None

    @field_validator("mcp_servers", "container", mode="before")
    @classmethod
    def _no_hosted_features(cls, value: Any) -> Any:
        if value:
            raise ValueError("this needs Anthropic's hosted services, which are not served here")
        return value or None


class MessageCreateRequest(MessageCountTokensRequest):
    # Required, and a ceiling: cut to the room the prompt leaves in the context.
    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: Annotated[list[StopSequence], Field(max_length=MAX_STOP_SEQUENCES)] | None = (
        None
    )
    stream: bool = False
    temperature: Probability | None = None
    top_p: Probability | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    metadata: MetadataParam | None = None
    service_tier: Literal["auto", "standard_only"] | None = None

    @property
    def user(self) -> str | None:
        """metadata.user_id, which the request log records as it records OpenAI's `user`."""
        return self.metadata.user_id if self.metadata else None


class TextBlock(OpenAIResponse):
    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(OpenAIResponse):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class ThinkingBlock(OpenAIResponse):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""


ContentBlock = Annotated[TextBlock | ToolUseBlock | ThinkingBlock, Field(discriminator="type")]


class MessageUsage(OpenAIResponse):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0  # the prefix cache is automatic and not billed apart
    cache_read_input_tokens: int = 0


class Message(OpenAIResponse):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock]
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: MessageUsage


class MessageTokensCount(OpenAIResponse):
    input_tokens: int


class MessageStartEvent(OpenAIResponse):
    type: Literal["message_start"] = "message_start"
    message: Message


class PingEvent(OpenAIResponse):
    type: Literal["ping"] = "ping"


class ContentBlockStartEvent(OpenAIResponse):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: ContentBlock


class TextBlockDelta(OpenAIResponse):
    type: Literal["text_delta"] = "text_delta"
    text: str


class InputJsonDelta(OpenAIResponse):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ThinkingBlockDelta(OpenAIResponse):
    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


class SignatureDelta(OpenAIResponse):
    type: Literal["signature_delta"] = "signature_delta"
    signature: str


BlockDelta = Annotated[
    TextBlockDelta | InputJsonDelta | ThinkingBlockDelta | SignatureDelta,
    Field(discriminator="type"),
]


class ContentBlockDeltaEvent(OpenAIResponse):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: BlockDelta


class ContentBlockStopEvent(OpenAIResponse):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDelta(OpenAIResponse):
    stop_reason: StopReason | None
    stop_sequence: str | None = None


class MessageDeltaUsage(OpenAIResponse):
    output_tokens: int
    input_tokens: int | None = None


class MessageDeltaEvent(OpenAIResponse):
    type: Literal["message_delta"] = "message_delta"
    delta: MessageDelta
    usage: MessageDeltaUsage


class MessageStopEvent(OpenAIResponse):
    type: Literal["message_stop"] = "message_stop"


MessageStreamEvent = (
    MessageStartEvent
    | PingEvent
    | ContentBlockStartEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
)


class MessagesError(OpenAIResponse):
    type: str
    message: str


class MessagesErrorResponse(OpenAIResponse):
    """Anthropic's error envelope, of every 4xx and 5xx of the Messages paths."""

    type: Literal["error"] = "error"
    error: MessagesError


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(error: StratusError) -> dict[str, Any]:
    """An error in Anthropic's envelope. Anthropic has no `param`: the field is named in the
    message, as Anthropic's own are (`messages.0.content.1.tool_use_id: ...`)."""
    kind = _ERROR_TYPES.get(error.status)
    if kind is None:
        kind = "invalid_request_error" if error.status < 500 else "api_error"
    message = error.message
    if error.param:
        dotted = re.sub(r"\[(\d+)\]", r".\1", error.param)
        message = message.replace(error.param, dotted)
        if dotted not in message:
            message = f"{dotted}: {message}"
    return MessagesErrorResponse(error=MessagesError(type=kind, message=message)).model_dump()
