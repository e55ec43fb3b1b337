"""The API families Stratus speaks, as far as the platforms must know them: how each answers
errors (its envelope) and frames its streams. Their bodies are the handlers' business."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.errors import StratusError
from common.lazy import imported, later


@dataclass(frozen=True)
class Dialect:
    """How an API family answers besides its bodies: its error envelope, and whether its
    server-sent events are named (`event: <type>`, no [DONE]) as the Responses and Messages
    APIs' are."""

    envelope: Callable[[StratusError], dict[str, Any]] = StratusError.envelope
    named_events: bool = False
    error_schema_name: str = "common.protocol.base:ErrorResponse"  # the envelope's type

    @property
    def error_schema(self) -> type:
        """The envelope's protocol type, for the document."""
        return imported(self.error_schema_name)


OPENAI = Dialect()
# OpenAI's Responses API: the same envelope, named events.
RESPONSES = Dialect(named_events=True)
# Anthropic's Messages API: its own envelope ({"type": "error", "error": {type, message}}),
# named events.
ANTHROPIC = Dialect(
    later("common.protocol.messages:error_body"),
    named_events=True,
    error_schema_name="common.protocol.messages:MessagesErrorResponse",
)
