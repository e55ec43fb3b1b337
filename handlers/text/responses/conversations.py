"""The Conversations API: /v1/conversations and its items, kept in the response store (SQLite on
a volume, or S3 across a fleet) under the caller's key, with its size cap and TTL. A Response
given `conversation` reads the conversation's items before its input and adds its input and
output to them when it ends (create.py).

Another key's conversation, an expired one and one that never was are the same 404.
"""

from __future__ import annotations

import time
from typing import Any

from common.errors import NotFound
from common.protocol.base import new_id
from common.protocol.conversations import (
    AddItemsRequest,
    Conversation,
    ConversationItemList,
    CreateConversationRequest,
    DeletedConversation,
    UpdateConversationRequest,
)
from common.protocol.responses import StoredItem
from common.response_store import serialise
from common.store import ModelStore
from handlers.text.responses.items import normalise
from handlers.text.responses.stored import InputItemsQuery, Stored, blobs, page

# The stored document's keys: the conversation object, and its items, oldest first.
CONVERSATION, ITEMS = "conversation", "items"


def create_conversation(
    stateful: Stored[CreateConversationRequest], store: ModelStore
) -> Conversation:
    request = stateful.request
    conversation = Conversation(
        id=new_id("conv_"), created_at=int(time.time()), metadata=request.metadata or {}
    )
    items = _items(stateful, request.items or [], "items")
    _put(stateful, {CONVERSATION: conversation.model_dump(mode="json"), ITEMS: items})
    return conversation


def retrieve_conversation(stateful: Stored[str], store: ModelStore) -> Conversation:
    return Conversation.model_validate(read_conversation(stateful, stateful.request)[CONVERSATION])


def update_conversation(
    stateful: Stored[tuple[str, UpdateConversationRequest]], store: ModelStore
) -> Conversation:
    conversation_id, request = stateful.request
    document = read_conversation(stateful, conversation_id)
    document[CONVERSATION]["metadata"] = request.metadata
    _put(stateful, document)
    return Conversation.model_validate(document[CONVERSATION])


def delete_conversation(stateful: Stored[str], store: ModelStore) -> DeletedConversation:
    read_conversation(stateful, stateful.request)  # its own 404
    stateful.responses.delete(stateful.request, stateful.owner)
    return DeletedConversation(id=stateful.request)


def list_items(
    stateful: Stored[tuple[str, InputItemsQuery]], store: ModelStore
) -> ConversationItemList:
    """The conversation's items: newest first unless `order` is asc; `limit` (1-100, 20)
    items after the item `after`."""
    conversation_id, query = stateful.request
    items = read_conversation(stateful, conversation_id)[ITEMS]
    return ConversationItemList(**page(items, query))


def add_items(
    stateful: Stored[tuple[str, AddItemsRequest]], store: ModelStore
) -> ConversationItemList:
    conversation_id, request = stateful.request
    document = read_conversation(stateful, conversation_id)
    added = _items(stateful, request.items, "items")
    document[ITEMS].extend(added)
    _put(stateful, document)
    return ConversationItemList(
        data=added, first_id=added[0]["id"], last_id=added[-1]["id"], has_more=False
    )


def retrieve_item(stateful: Stored[tuple[str, str]], store: ModelStore) -> StoredItem:
    conversation_id, item_id = stateful.request
    items = read_conversation(stateful, conversation_id)[ITEMS]
    return StoredItem.model_validate(items[_position(items, item_id)])


def delete_item(stateful: Stored[tuple[str, str]], store: ModelStore) -> Conversation:
    conversation_id, item_id = stateful.request
    document = read_conversation(stateful, conversation_id)
    del document[ITEMS][_position(document[ITEMS], item_id)]
    _put(stateful, document)
    return Conversation.model_validate(document[CONVERSATION])


def read_conversation(
    stateful: Stored[Any], conversation_id: str, param: str = "conversation_id"
) -> dict[str, Any]:
    """The caller's conversation document, or the same 404 for one that is not theirs, has
    expired or never was (a stored response's id is not a conversation's either)."""
    missing = NotFound(
        f"No conversation found with id '{conversation_id}'.",
        param=param,
        code="conversation_not_found",
    )
    if not conversation_id.startswith("conv_"):
        raise missing
    try:
        document = stateful.responses.get(conversation_id, stateful.owner)
    except NotFound:
        raise missing from None
    if CONVERSATION not in document:
        raise missing
    return document


def append_turn(stateful: Stored[Any], conversation_id: str, items: list[dict[str, Any]]) -> None:
    """Adds a response's input and output items to its conversation, as read now: items added
    while it generated stay, but two turns written at the same moment may keep only one (the
    store has no transactions; the README says so)."""
    document = read_conversation(stateful, conversation_id, "conversation")
    document[ITEMS].extend(items)
    _put(stateful, document, param="conversation")


def check_room(
    stateful: Stored[Any], document: dict[str, Any], items: list[dict[str, Any]]
) -> None:
    """A 400 before generating when the conversation with this turn's input would not fit."""
    _serialised({**document, ITEMS: [*document[ITEMS], *items]}, stateful, "conversation")


def _items(stateful: Stored[Any], raw: list[dict[str, Any]], param: str) -> list[dict[str, Any]]:
    _, unseal = blobs(stateful)
    return normalise(raw, unseal, param=param)


def _position(items: list[dict[str, Any]], item_id: str) -> int:
    for index, item in enumerate(items):
        if item.get("id") == item_id:
            return index
    raise NotFound(f"No item '{item_id}' in this conversation.", param="item_id")


def _put(stateful: Stored[Any], document: dict[str, Any], param: str = "items") -> None:
    _serialised(document, stateful, param)
    conversation_id = document[CONVERSATION]["id"]
    stateful.responses.put(conversation_id, stateful.owner, document)


def _serialised(document: dict[str, Any], stateful: Stored[Any], param: str) -> None:
    advice = "delete some of its items, or start a new conversation"
    serialise(document, stateful.responses.max_bytes, param, advice)
