"""GET /v1/models and GET /v1/models/{model}: every id a client may send, aliases included, in
OpenAI's shapes, or in Anthropic's Models API's for an Anthropic client (Claude Code lists a
gateway's models this way)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from common.errors import InvalidRequest, ModelNotFound
from common.protocol.models import AnthropicModel, AnthropicModelList, Model, ModelList
from common.registry import RegisteredModel, Registry


def list_models(
    registry: Registry, filter: str | None = None, exclude_configured: bool = False
) -> ModelList:
    """`filter` is a regular expression searched in each id (as LocalAI's); with
    `exclude_configured`, models from the user's registry files are left out."""
    pattern = _filter_pattern(filter) if filter else None
    data = [
        _model(registry, model_id, entry)
        for model_id, entry in registry.ids()
        if (pattern is None or pattern.search(model_id))
        and not (exclude_configured and entry.user_configured)
    ]
    return ModelList(data=data)


MAX_FILTER_LENGTH = 256


def _filter_pattern(filter: str) -> Any:
    """A client's regular expression, compiled by RE2: matching takes time linear in the id,
    whatever the pattern (Python's `re` backtracks: `(.*.*.*.*.*.*.*.*.*.*.*.*)!` took minutes
    on the event loop). RE2 has no look-around or backreferences; those are a 400."""
    import re2

    if len(filter) > MAX_FILTER_LENGTH:
        raise InvalidRequest(
            f"'filter' may have at most {MAX_FILTER_LENGTH} characters.", param="filter"
        )
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(filter, options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args else "invalid"
        raise InvalidRequest(
            f"'filter' is not a valid regular expression (RE2 syntax): {reason}", param="filter"
        ) from None


def retrieve_model(registry: Registry, model_id: str) -> Model:
    for known_id, entry in registry.ids():
        if known_id == model_id:
            return _model(registry, known_id, entry)
    raise ModelNotFound(model_id)


def _model(registry: Registry, model_id: str, entry: RegisteredModel) -> Model:
    created = entry.config.created or registry.created
    return Model(id=model_id, created=created, owned_by=entry.config.owned_by)


MAX_PAGE = 1000  # Anthropic's limit on `limit`


def list_anthropic_models(
    registry: Registry, limit: int = 20, after_id: str | None = None, before_id: str | None = None
) -> AnthropicModelList:
    """A page of `limit` models after `after_id` or before `before_id` (ids listed earlier),
    as Anthropic's Models API pages them: those that write text, the only ones Messages takes."""
    ids = [model_id for model_id, entry in registry.ids() if entry.config.writes_text]
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"'limit' must be between 1 and {MAX_PAGE}.", param="limit")
    if after_id is not None and before_id is not None:
        raise InvalidRequest("Give 'after_id' or 'before_id', not both.", param="before_id")
    start, end = 0, len(ids)
    for name, cursor in (("after_id", after_id), ("before_id", before_id)):
        if cursor is not None and cursor not in ids:
            raise InvalidRequest(f"'{name}' is not the id of a model listed here.", param=name)
    if after_id is not None:
        start = ids.index(after_id) + 1
        end = min(start + limit, len(ids))
    elif before_id is not None:
        end = ids.index(before_id)
        start = max(0, end - limit)
    else:
        end = min(limit, len(ids))
    page = [retrieve_anthropic_model(registry, model_id) for model_id in ids[start:end]]
    return AnthropicModelList(
        data=page,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=(start > 0) if before_id is not None else end < len(ids),
    )


def retrieve_anthropic_model(registry: Registry, model_id: str) -> AnthropicModel:
    model = retrieve_model(registry, model_id)
    config = registry.resolve(model_id)
    window = config.parameters.get("n_ctx")
    return AnthropicModel(
        id=model.id,
        display_name=model.id if model.id == config.name else f"{model.id} ({config.name})",
        created_at=datetime.fromtimestamp(model.created, UTC).isoformat().replace("+00:00", "Z"),
        max_input_tokens=window if isinstance(window, int) else None,
    )
