"""GET /v1/models and GET /v1/models/{model}: every id a client may send, aliases included."""

from __future__ import annotations

import re

from common.errors import InvalidRequest, ModelNotFound
from common.protocol.models import Model, ModelList
from common.registry import RegisteredModel, Registry


def list_models(
    registry: Registry, filter: str | None = None, exclude_configured: bool = False
) -> ModelList:
    """`filter` is a regular expression searched in each id (as LocalAI's); with
    `exclude_configured`, models from the user's registry files are left out."""
    pattern = None
    if filter:
        try:
            pattern = re.compile(filter)
        except re.error as exc:
            raise InvalidRequest(
                f"'filter' is not a valid regular expression: {exc}", param="filter"
            ) from None
    data = [
        _model(registry, model_id, entry)
        for model_id, entry in registry.ids()
        if (pattern is None or pattern.search(model_id))
        and not (exclude_configured and entry.user_configured)
    ]
    return ModelList(data=data)


def retrieve_model(registry: Registry, model_id: str) -> Model:
    for known_id, entry in registry.ids():
        if known_id == model_id:
            return _model(registry, known_id, entry)
    raise ModelNotFound(model_id)


def _model(registry: Registry, model_id: str, entry: RegisteredModel) -> Model:
    created = entry.config.created or registry.created
    return Model(id=model_id, created=created, owned_by=entry.config.owned_by)
