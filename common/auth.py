"""API-key authentication: `Authorization: Bearer KEY`, `x-api-key: KEY`, or HTTP Basic with
the key as the password (how a browser sends it to /docs and /metrics, and Prometheus'
`basic_auth`)."""

from __future__ import annotations

import base64
import binascii
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

    def check(self, authorization: str | None, x_api_key: str | None = None) -> str:
        """The caller's identity (an owner of stored state: a digest of its key, "" when no
        keys are set), or Unauthorized."""
        if not self.enabled:
            return ""
        presented = x_api_key
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer":
                presented = token.strip()
            elif scheme.lower() == "basic":
                presented = _basic_password(token.strip())
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
        # Another digest than the one compared against: an owner id written to a store says
        # nothing that would help to check a guessed key offline faster than the key itself.
        return hashlib.sha256(b"stratus-owner:" + presented.encode()).hexdigest()[:32]


def _basic_password(token: str) -> str | None:
    try:
        user_and_password = base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user_and_password.partition(":")[2] or None
