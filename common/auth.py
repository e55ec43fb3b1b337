"""API-key authentication: `Authorization: Bearer KEY` or `x-api-key: KEY`."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from common.errors import Unauthorized


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeyAuth:
    """Compares digests in constant time against every key, so timing reveals nothing."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(k) for k in keys if k)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, authorization: str | None, x_api_key: str | None = None) -> None:
        if not self.enabled:
            return
        presented = x_api_key
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer":
                presented = token.strip()
        if not presented:
            raise Unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
            )
        digest = _digest(presented)
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise Unauthorized("Incorrect API key provided.")
