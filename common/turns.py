"""What a conversation is made of, as every dialect parses it and every engine renders it:
turns with their tool calls and images, the tools offered, and a token's log probability.
Plain data at the bottom of the tree (no project imports): the dialects' parsers (handlers),
the image reader (common/image_input) and the engines (layers) all speak it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True)
class ToolCall:
    """A call an assistant made earlier in the conversation."""

    id: str
    name: str
    arguments: str  # JSON text, as the client sent it back


# Where an image sat in a turn's content. A client's text may not hold it (layers' callers refuse
# it: common/image_input.check_text), so every marker in a rendered prompt is an image's.
IMAGE_MARKER = "<\x00image\x00>"


# Where an audio clip sat in a turn's content, until its transcript takes its place (before the
# prompt is made); refused in a client's text as the image marker is.
AUDIO_MARKER = "<\x00audio\x00>"


@dataclass(frozen=True)
class AudioClip:
    """Audio a client put in a turn (an input_audio part), to be heard before the prompt is
    made: its bytes and the format the client named."""

    data: bytes = field(repr=False)
    format: str
    param: str = ""


@dataclass(frozen=True)
class ImageRef:
    """An image a client put in a turn, not read yet: a data: or http(s) URL."""

    url: str
    detail: str = "auto"  # auto, low or high (OpenAI's): low is read at 512x512 at most
    param: str = ""  # where the request has it (messages[1].content[2]): every refusal names it


@dataclass(frozen=True)
class Picture:
    """An image read and decoded: its RGB pixels, row by row, 3 bytes each."""

    width: int
    height: int
    rgb: bytes = field(repr=False)
    digest: str  # sha256 of the size and pixels: the same image always, a different one never
    param: str = ""


@dataclass(frozen=True)
class ChatTurn:
    role: str  # system, user, assistant or tool
    content: str  # an IMAGE_MARKER where each of `images` sits, in order
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant's calls
    tool_call_id: str | None = None  # the call a tool turn answers
    name: str | None = None  # the function a tool turn answers
    reasoning: str = ""  # an assistant's thinking before its answer, as the client sent it back
    images: tuple[ImageRef | Picture, ...] = ()  # read (Picture) before the prompt is made
    audio: tuple[AudioClip, ...] = ()  # an AUDIO_MARKER where each sits, until it is heard


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: its name, what it does, its parameters' JSON schema."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def openai(self) -> dict[str, Any]:
        """The tool as OpenAI's API (and chat templates that take `tools`) write it."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = dict(self.parameters)
        return {"type": "function", "function": function}


class TokenLogprob(NamedTuple):
    """A token's bytes and log probability, with the most likely alternatives at its step."""

    piece: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()
