"""Shared pieces of the protocol: base classes, usage, stop/stream options, request parsing."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
)

from common.errors import InvalidRequest

# A field OpenAI's API does not have (llama.cpp's, vLLM's, LocalAI's or Stratus' own): so
# marked in the OpenAPI document.
EXTENSION = {"x-stratus-extension": True}
MAX_STOP_SEQUENCES = 4
MAX_STOP_LENGTH = 1024


def extension(default: Any = None, **constraints: Any) -> Any:
    """A request field's default, marking the field as an extension of OpenAI's API."""
    return Field(default, json_schema_extra=EXTENSION, **constraints)


class OpenAIRequest(BaseModel):
    """A request body: unknown fields are ignored, known ones validated strictly enough."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, protected_namespaces=(), defer_build=True
    )


class OpenAIResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), defer_build=True)

    def to_json(self) -> str:
        return self.model_dump_json()


def absent_when_none(*fields: str) -> ConfigDict:
    """The config of a response type whose serializer leaves these fields out when they are
    None (OpenAI types them as present or absent, never null): its JSON schema (the one the
    serializer's dict return type would hide) says so."""

    def strip_null(schema: dict[str, Any]) -> None:
        for name in fields:
            field = schema["properties"][name]
            field.pop("default", None)
            kinds = [k for k in field.pop("anyOf", []) if k.get("type") != "null"]
            if len(kinds) == 1:
                field.update(kinds[0])
            elif kinds:
                field["anyOf"] = kinds

    return ConfigDict(json_schema_extra=strip_null)  # type: ignore[typeddict-item]


class Sparse(OpenAIResponse):
    """A response type whose fields named in `absent` are left out when None (give it
    `model_config = absent_when_none(*absent)` too, so its JSON schema says so)."""

    absent: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, handler: Any) -> dict[str, Any]:
        body = handler(self)
        for name in self.absent:
            if body.get(name) is None:
                body.pop(name, None)
        return body


@dataclass(frozen=True)
class BinaryResponse:
    """A response that is not JSON: audio from /v1/audio/speech, for instance."""

    content: bytes
    media_type: str


@dataclass(frozen=True)
class BinaryStream:
    """A response that is not JSON, sent as it is produced: speech, sentence by sentence."""

    chunks: Iterator[bytes]
    media_type: str


class ErrorDetail(OpenAIResponse):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(OpenAIResponse):
    """OpenAI's error envelope, of every 4xx and 5xx (common/errors.py renders it)."""

    error: ErrorDetail


class Usage(OpenAIResponse):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class StreamOptions(OpenAIRequest):
    include_usage: bool = False


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
Count = Annotated[int, Field(ge=1, le=128)]
TokenBudget = Annotated[int, Field(ge=1)]


class SamplingFields(OpenAIRequest):
    """Fields shared by chat and completions, plus the llama.cpp/vLLM extras peers accept."""

    model: str = Field(min_length=1)
    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_k: Annotated[int, Field(ge=0)] | None = extension()
    min_p: Probability | None = extension()
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repeat_penalty: Annotated[float, Field(gt=0.0)] | None = extension()
    seed: int | None = None
    n: Count = 1
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = extension(False)  # vLLM's: generate exactly max_tokens (benchmarks)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        if any(len(s) > MAX_STOP_LENGTH for s in stops):
            raise ValueError(f"a stop sequence may have at most {MAX_STOP_LENGTH} characters")
        return value

    @property
    def stop_sequences(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


def new_id(prefix: str) -> str:
    """A fresh id after `prefix`, which carries its API's separator: "chatcmpl-" and "cmpl-"
    (OpenAI's older APIs), "resp_", "msg_", "call_", "toolu_" (the Responses API's and
    Anthropic's)."""
    return f"{prefix}{secrets.token_hex(12)}"


Request = TypeVar("Request", bound=BaseModel)


def parse_request(model: type[Request], data: Any) -> Request:
    """Validate a decoded body; a failure names the offending field as OpenAI's `param`."""
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        # For a union (content: str | list[part]) pydantic reports each member; the deepest
        # location is the one that tells the client what to fix.
        first = max(errors, key=lambda e: len(e["loc"]))
        param = _param_path(first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            message = f"'{param}' is a required property"
        else:
            message = f"Invalid value for '{param}': {message}"
        raise InvalidRequest(message, param=param, code="invalid_value") from None


def _param_path(loc: tuple[Any, ...]) -> str:
    # pydantic adds the union member's type name to the location ("str", "list[str]", ...);
    # the client only cares about field names and indexes.
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and not _is_type_tag(part):
            path += f".{part}" if path else part
    return path or "body"


def _is_type_tag(part: str) -> bool:
    return (
        "[" in part
        or part[:1].isupper()  # a model class name, e.g. "TextContentPart"
        or part in {"str", "int", "float", "bool", "list", "dict", "function-after"}
    )
