"""Which endpoint a loaded model can serve: a text model cannot embed, nor an embedder chat."""

from __future__ import annotations

from typing import Any

from common.errors import InvalidRequest


def require(model: Any, method: str, model_id: str, what: str) -> Any:
    """The model, if it has the engine method an endpoint needs; a clear 400 if not."""
    if not hasattr(model, method):
        raise InvalidRequest(
            f"The model '{model_id}' does not {what}; GET /v1/models lists the models served here.",
            param="model",
            code="model_not_supported",
        )
    return model
