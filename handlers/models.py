"""GET /v1/models and GET /v1/models/{model}: every id a client may send, aliases included."""

from __future__ import annotations

from typing import Any

from common.errors import InvalidRequest, ModelNotFound
from common.protocol.models import Model, ModelList
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
