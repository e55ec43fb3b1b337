"""The stored responses: GET and DELETE /v1/responses/{id} and its input items, each read with
the caller's key (another key's response is not found)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from common.errors import InvalidRequest, NotFound
from common.protocol.responses import DeletedResponse, InputItemList, Response
from common.response_store import ResponseStore
from common.sealed import Sealer, Unsealed
from common.store import ModelStore

Asked = TypeVar("Asked", covariant=True)


class Stored(Protocol, Generic[Asked]):
    """What an operation on stored responses gets from its adapter (adapters/parsed.Stateful):
    what was asked (a new response's request, a response's id, an id and a listing query), the
    response store, the caller who owns what it writes and may read it back, and the sealer of
    the blobs the caller hands back."""

    @property
    def request(self) -> Asked: ...

    @property
    def responses(self) -> ResponseStore: ...

    @property
    def owner(self) -> str: ...

    @property
    def sealer(self) -> Sealer | None: ...


InputItemsQuery = dict[str, Any]  # limit, order, after (input_items_query)

# The stored document's keys: this response, its input items, and the items of the turns
# before it (previous_response_id's chain, resolved when it was made: one read per turn).
RESPONSE, INPUT, HISTORY = "response", "input_items", "history"


def retrieve_response(stateful: Stored[str], store: ModelStore) -> Response:
    return Response.model_validate(
        stored_response(stateful, stateful.request, "response_id")[RESPONSE]
    )


def delete_response(stateful: Stored[str], store: ModelStore) -> DeletedResponse:
    stateful.responses.delete(stateful.request, stateful.owner)
    return DeletedResponse(id=stateful.request)


def list_input_items(
    stateful: Stored[tuple[str, InputItemsQuery]], store: ModelStore
) -> InputItemList:
    """This response's input items: newest first unless `order` is asc; `limit` (1-100, 20)
    items after the item `after`."""
    response_id, query = stateful.request
    items = stored_response(stateful, response_id, "response_id")[INPUT]
    return InputItemList(**page(items, query))


def page(stored_items: list[dict[str, Any]], query: InputItemsQuery) -> dict[str, Any]:
    """A list's page of stored items (oldest first): its `data`, `first_id`, `last_id` and
    `has_more`, as the query asks (order, the item `after`, limit)."""
    items = list(stored_items)
    if query["order"] == "desc":
        items.reverse()
    if query["after"] is not None:
        ids = [item["id"] for item in items]
        if query["after"] not in ids:
            raise NotFound(f"No item '{query['after']}' in this list.", param="after")
        items = items[ids.index(query["after"]) + 1 :]
    shown = items[: query["limit"]]
    return {
        "data": shown,
        "first_id": shown[0]["id"] if shown else None,
        "last_id": shown[-1]["id"] if shown else None,
        "has_more": len(items) > len(shown),
    }


def stored_response(stateful: Stored[Any], response_id: str, param: str) -> dict[str, Any]:
    try:
        return stateful.responses.get(response_id, stateful.owner)
    except NotFound as missing:
        raise NotFound(missing.message, param=param, code=missing.code) from None


def input_items_query(params: Mapping[str, str]) -> InputItemsQuery:
    """GET .../input_items' query: limit (1-100, default 20), order (asc|desc), after."""
    raw_limit = params.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise InvalidRequest("'limit' must be an integer from 1 to 100.", param="limit")
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be asc or desc.", param="order")
    return {"limit": int(raw_limit), "order": order, "after": params.get("after")}


def blobs(stateful: Stored[Any]) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """Sealing a turn's reasoning for the caller, and reading it back: a blob names its owner,
    so one made for another key is refused like a forged one."""

    def seal(text: str) -> str:
        return stateful.sealer.seal({"owner": stateful.owner, "text": text})

    def unseal(blob: str) -> str:
        payload = stateful.sealer.unseal(blob)
        if not isinstance(payload, dict) or payload.get("owner") != stateful.owner:
            raise Unsealed("another caller's blob")
        return str(payload.get("text", ""))

    return seal, unseal
