"""A parsed request as an adapter hands it to its handler: with what the platform adds to it
(where published files go, the stored responses and who the caller is)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.image_input import ImageLimits
from common.image_urls import ImageUrls


@dataclass(frozen=True)
class Publishing:
    """A parsed request of an operation that publishes, with where its files go (the adapter's
    ImageUrls) and the request's own base URL (scheme://host[:port]; None off HTTP)."""

    request: Any
    urls: ImageUrls
    base_url: str | None = None


@dataclass(frozen=True)
class Stateful:
    """A parsed request of an operation that keeps state between requests (stored responses):
    with the store, and the caller who owns what it writes and may read it back."""

    request: Any
    responses: Any  # common.response_store.ResponseStore
    owner: str
    sealer: Any = None  # common.sealed.Sealer: blobs the client hands back


@dataclass(frozen=True)
class Signing:
    """A parsed request of an operation whose answers carry signatures the client hands back
    (Messages' thinking blocks): with the signer of the caller's."""

    request: Any
    signer: Any  # common.sealed.Signer


@dataclass(frozen=True)
class Reading:
    """A parsed request of an operation that reads images from its messages, with how (the
    operator's size caps and which hosts their URLs may reach)."""

    request: Any  # the request, or its Stateful or Signing
    images: ImageLimits


def requested_model(parsed: Any) -> str:
    """The model id a parsed inference request names (or its operation's default)."""
    if isinstance(parsed, Reading):
        parsed = parsed.request
    if isinstance(parsed, Publishing | Stateful | Signing):
        parsed = parsed.request
    elif isinstance(parsed, tuple):  # an upload: (its form fields, the audio)
        parsed = parsed[0]
    return getattr(parsed, "model", None) or getattr(parsed, "default_model", "")
