"""The Conversations API (/v1/conversations, its items): a conversation's metadata and the items
that Responses given `conversation` read before their input and add to, field for field with
OpenAI's spec. Items arrive as JSON objects, read one by one as the Responses API reads its
input items (handlers/text/responses/items.normalise)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from common.protocol.base import OpenAIRequest, OpenAIResponse
from common.protocol.responses import InputItemList, checked_metadata

MAX_ITEMS_AT_ONCE = 20  # OpenAI's limit on the items one request adds


class CreateConversationRequest(OpenAIRequest):
    metadata: dict[str, str] | None = None
    items: list[dict[str, Any]] | None = Field(None, max_length=MAX_ITEMS_AT_ONCE)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return checked_metadata(value)


class UpdateConversationRequest(OpenAIRequest):
    metadata: dict[str, str]

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str] | None:
        return checked_metadata(value)


class AddItemsRequest(OpenAIRequest):
    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ITEMS_AT_ONCE)


class Conversation(OpenAIResponse):
    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int
    metadata: dict[str, str] = Field(default_factory=dict)


class DeletedConversation(OpenAIResponse):
    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: Literal[True] = True


class ConversationItemList(InputItemList):
    """A page of a conversation's items: the same shape as a response's input items."""
