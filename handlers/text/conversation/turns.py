"""Turns built from any dialect's messages, by the rules every dialect shares.

Each dialect walks its own messages (Chat Completions' messages, Messages' content blocks,
Responses' input items); what it finds goes through these:
- `Content`: a turn's text parts and images, each text checked where it stands and each image
  replaced by a marker at its place (images in user turns only, as OpenAI's);
- `Calls`: the tool calls made so far, so a tool result that answers no earlier call is a 400
  naming the result's id;
- `unsupported`: the 400 for a part a text model cannot read.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from common.errors import InvalidRequest
from common.image_input import check_text
from common.turns import AUDIO_MARKER, IMAGE_MARKER, AudioClip, ImageRef, ToolCall

# How a turn's text parts are joined. Chat Completions and Responses concatenate their text
# parts as sent; Messages separates its text blocks with a blank line.
AS_SENT = ""
BLANK_LINE = "\n\n"


def image_ref(role: str, url: str, detail: str | None, param: str) -> ImageRef:
    """An image a message holds; images are read in user messages only (as OpenAI's)."""
    if role != "user":
        raise InvalidRequest(
            f"Images are read in user messages only, not in {role} messages.", param=param
        )
    return ImageRef(url, detail or "auto", param)


MAX_AUDIO_BYTES = 25 * 1024 * 1024  # OpenAI's limit on an audio file to transcribe


def audio_clip(role: str, data: str, audio_format: str, param: str) -> AudioClip:
    """An audio part's bytes (base64), in a user message (as OpenAI's), at most 25 MB."""
    if role != "user":
        raise InvalidRequest(
            f"Audio is heard in user messages only, not in {role} messages.", param=param
        )
    if len(data) > (MAX_AUDIO_BYTES * 4) // 3 + 4:
        raise InvalidRequest(
            f"'{param}.input_audio.data' is over {MAX_AUDIO_BYTES // 2**20} MB of audio.",
            param=f"{param}.input_audio.data",
        )
    try:
        audio = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"'{param}.input_audio.data' is not base64.", param=f"{param}.input_audio.data"
        ) from None
    if not audio:
        raise InvalidRequest(
            f"'{param}.input_audio.data' is empty.", param=f"{param}.input_audio.data"
        )
    return AudioClip(audio, audio_format, param)


@dataclass
class Content:
    """One turn's content as it is read: `text` and `image` in the order the message has them,
    then `joined` text (a marker where each image sits) and the `images`."""

    role: str
    separator: str  # AS_SENT or BLANK_LINE: the dialect's
    texts: list[str] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)
    audio: list[AudioClip] = field(default_factory=list)

    def text(self, text: str, param: str) -> None:
        check_text(text, param)
        self.texts.append(text)

    def stored_text(self, text: str) -> None:
        """A text checked when it was stored (a Responses item, normalised as it came in)."""
        self.texts.append(text)

    def image(self, url: str, detail: str | None, param: str) -> None:
        self.images.append(image_ref(self.role, url, detail, param))
        self.texts.append(IMAGE_MARKER)

    def sound(self, data: str, audio_format: str, param: str) -> None:
        """An input_audio part: heard (transcribed) before the prompt is made, its transcript
        in its place."""
        self.audio.append(audio_clip(self.role, data, audio_format, param))
        self.texts.append(AUDIO_MARKER)

    @property
    def joined(self) -> str:
        return self.separator.join(self.texts)


@dataclass
class Calls:
    """The tool calls made so far in a conversation, by id."""

    names: dict[str, str] = field(default_factory=dict)  # call id -> function name

    def made(self, *calls: ToolCall) -> None:
        self.names.update((call.id, call.name) for call in calls)

    def answered(self, call_id: str, param: str) -> str:
        """The name of the function a tool result answers, or a 400 naming `param` if it
        answers no call made earlier in the conversation."""
        if call_id not in self.names:
            raise InvalidRequest(
                f"{param} '{call_id}' answers no tool call made earlier in the conversation.",
                param=param,
            )
        return self.names[call_id]


def unsupported(kind: object, accepted: str, param: str, noun: str = "parts") -> InvalidRequest:
    """The 400 for a content part (Messages: block) a text model cannot read; `accepted` names
    what the dialect can send instead ("text and image_url parts")."""
    return InvalidRequest(
        f"Content {noun} of type '{kind}' are not supported: send {accepted}.", param=param
    )
