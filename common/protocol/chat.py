"""POST /v1/chat/completions: request, response and stream chunk."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from common.protocol.base import (
    OpenAIRequest,
    OpenAIResponse,
    SamplingFields,
    TokenBudget,
    Usage,
    absent_when_none,
    extension,
)

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
# Tokens a reasoning model may think at each reasoning_effort before its answer is forced to
# begin (high and xhigh: as long as it likes, up to the completion budget).
REASONING_BUDGETS = {"minimal": 128, "low": 512, "medium": 2048}
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
# OpenAI's rule for function names; it also keeps them literal inside a grammar and JSON.
FunctionName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]


class ImageUrl(OpenAIRequest):
    """An image_url part's image: a data: URL (base64) or an http(s) URL."""

    url: str
    detail: Literal["auto", "low", "high"] | None = None


# The formats an input_audio part may name: OpenAI's (wav, mp3) and the others transcription
# takes.
AudioFormat = Literal["wav", "mp3", "m4a", "ogg", "webm", "flac"]


class InputAudio(OpenAIRequest):
    """An input_audio part's audio: base64 bytes and their format."""

    data: str
    format: AudioFormat


class AudioOutputParam(OpenAIRequest):
    """How a spoken answer sounds: one of the speech model's voices, and the audio format."""

    voice: str = Field(min_length=1)
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]


class AudioRefParam(OpenAIRequest):
    """An earlier spoken answer, handed back by its id in an assistant message."""

    id: str = Field(min_length=1)


class ContentPart(OpenAIRequest):
    """One part of a message's content: text, an image for a vision model, or audio (heard by
    the registry's speech-to-text model)."""

    type: str
    text: str | None = None
    image_url: ImageUrl | None = None
    input_audio: InputAudio | None = None

    @model_validator(mode="after")
    def _parts_need_their_field(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text content part needs 'text'")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url content part needs 'image_url'")
        if self.type == "input_audio" and self.input_audio is None:
            raise ValueError("an input_audio content part needs 'input_audio'")
        return self


class FunctionCallArguments(OpenAIRequest):
    name: str
    arguments: str


class MessageToolCall(OpenAIRequest):
    """A call an assistant message made, as the client sends the conversation back."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCallArguments


class ChatMessage(OpenAIRequest):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCallArguments | None = None  # legacy: an assistant's one call
    # An assistant's thinking, sent back as the server gave it (vLLM's and llama.cpp's name;
    # `reasoning` as others write it): rendered where the model's template reads it.
    reasoning_content: str | None = extension()
    reasoning: str | None = extension()
    audio: AudioRefParam | None = None  # an assistant's spoken answer, by its id

    @field_validator("content", mode="before")
    @classmethod
    def _content_type(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | list):
            raise ValueError("content must be a string, an array of content parts, or null")
        return value


class FunctionDefinition(OpenAIRequest):
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(OpenAIRequest):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(OpenAIRequest):
    name: str


class NamedToolChoice(OpenAIRequest):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(OpenAIRequest):
    name: FunctionName
    description: str | None = None
    # `schema` would shadow pydantic's BaseModel.schema.
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIRequest):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("a response_format of type 'json_schema' needs 'json_schema'")
        return self


class TemplateSwitches(BaseModel):
    """chat_template_kwargs: the chat-template variables a request may set. Only these are
    passed on; any other is refused by name, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enable_thinking: StrictBool | None = None


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: TokenBudget | None = None
    max_completion_tokens: TokenBudget | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # The deprecated forms of tools and tool_choice.
    functions: list[FunctionDefinition] | None = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None
    # "none" turns a reasoning model's thinking off; the others bound it (REASONING_BUDGETS).
    # Models without reasoning answer the same either way.
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    chat_template_kwargs: TemplateSwitches | None = extension()  # llama.cpp's and vLLM's
    # A spoken answer (gpt-4o-audio-preview's): ["text", "audio"] with `audio`'s voice and
    # format; the registry's tts-1 speaks the answer's text.
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutputParam | None = Field(None, validate_default=True)

    @field_validator("audio")
    @classmethod
    def _audio_needs_its_modality(
        cls, value: AudioOutputParam | None, info: ValidationInfo
    ) -> AudioOutputParam | None:
        if (value is not None) != ("audio" in (info.data.get("modalities") or ())):
            raise ValueError(
                "a spoken answer needs both modalities ['text', 'audio'] and audio {voice, format}"
            )
        return value

    @property
    def reasoning_budget(self) -> int | None:
        return REASONING_BUDGETS.get(self.reasoning_effort or "")

    @property
    def thinking(self) -> bool:
        switches = self.chat_template_kwargs or TemplateSwitches()
        return self.reasoning_effort != "none" and switches.enable_thinking is not False

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs set to true")
        return value

    @property
    def token_budget(self) -> int | None:
        # max_completion_tokens supersedes the deprecated max_tokens when both are sent.
        return self.max_completion_tokens or self.max_tokens


def _without(handler: Any, value: Any, *names: str) -> dict[str, Any]:
    return {k: v for k, v in handler(value).items() if not (k in names and v is None)}


class FunctionCall(OpenAIResponse):
    name: str
    arguments: str


class ToolCall(OpenAIResponse):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatAudio(OpenAIResponse):
    """A spoken answer: its audio (base64), what it says, and the id that hands it back."""

    id: str
    data: str
    expires_at: int
    transcript: str


class ChatAudioDelta(OpenAIResponse):
    id: str | None = None
    data: str | None = None
    expires_at: int | None = None
    transcript: str | None = None

    model_config = absent_when_none("id", "data", "expires_at", "transcript")

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: Any) -> dict[str, Any]:
        return _without(handler, self, "id", "data", "expires_at", "transcript")


class ResponseMessage(OpenAIResponse):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None  # legacy `functions` requests
    reasoning_content: str | None = None  # a reasoning model's thinking (llama.cpp's, vLLM's)
    audio: ChatAudio | None = None  # a spoken answer (modalities audio)

    model_config = absent_when_none("tool_calls", "function_call", "reasoning_content", "audio")

    @model_serializer(mode="wrap")
    def _omit_absent_calls(self, handler: Any) -> dict[str, Any]:
        return _without(handler, self, "tool_calls", "function_call", "reasoning_content", "audio")


class TopLogprob(OpenAIResponse):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(OpenAIResponse):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class ChatChoice(OpenAIResponse):
    index: int
    message: ResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason


class ChatCompletion(OpenAIResponse):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str


class FunctionCallDelta(OpenAIResponse):
    name: str | None = None
    arguments: str | None = None

    model_config = absent_when_none("name", "arguments")

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: Any) -> dict[str, Any]:
        return _without(handler, self, "name", "arguments")


class ToolCallDelta(OpenAIResponse):
    """A call's first delta has index, id, type and name; the rest only argument text (the SDK
    concatenates every string it receives, so nothing may repeat)."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta

    model_config = absent_when_none("id", "type")

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: Any) -> dict[str, Any]:
        return _without(handler, self, "id", "type")


class ChoiceDelta(OpenAIResponse):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    function_call: FunctionCallDelta | None = None
    audio: ChatAudioDelta | None = None

    model_config = absent_when_none(
        "role", "content", "reasoning_content", "tool_calls", "function_call", "audio"
    )

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: Any) -> dict[str, Any]:
        # A delta carries only what changed: {"role": ...} first, then {"content": ...}, then {}.
        return _without(
            handler,
            self,
            "role",
            "content",
            "reasoning_content",
            "tool_calls",
            "function_call",
            "audio",
        )


class ChatChunkChoice(OpenAIResponse):
    index: int
    delta: ChoiceDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(OpenAIResponse):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    system_fingerprint: str
    usage: Usage | None = None
