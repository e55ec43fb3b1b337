"""Opaque, integrity-protected blobs that only this deployment can read back: the Responses
API's `reasoning.encrypted_content`, which lets a client that stores nothing (`store: false`)
hand a turn's reasoning back on the next request, to any worker of the fleet.

Encrypt-then-MAC with the standard library only: a random 16-byte nonce, a keystream of
HMAC-SHA256(encryption key, nonce || counter) blocks XORed with the payload, and an
HMAC-SHA256(authentication key, version || nonce || ciphertext) tag over it all. Both keys are
derived from one server secret, so every worker that shares the secret reads every blob, and a
blob made elsewhere (or altered by one bit) is refused.

Signatures are the same idea without the secrecy: an HMAC-SHA256 tag, with a key of their own,
over what a caller was given (Messages' thinking blocks), checked when the caller hands it back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

VERSION = b"\x01"
SIGNATURE = b"\x02"  # a signature's first byte: never a sealed blob's
_NONCE = 16
_TAG = 32


class Unsealed(ValueError):
    """A blob this deployment did not make, or one that was changed."""


class Sealer:
    def __init__(self, secret: bytes) -> None:
        self._encryption = hmac.new(secret, b"stratus-seal-encryption", hashlib.sha256).digest()
        self._authentication = hmac.new(secret, b"stratus-seal-mac", hashlib.sha256).digest()
        self._signing = hmac.new(secret, b"stratus-signature", hashlib.sha256).digest()

    @classmethod
    def from_settings(cls, secret: str, api_keys: tuple[str, ...]) -> Sealer:
        """The operator's secret; else one derived from the API keys (shared by a fleet that
        shares its keys); else a random one, good for this process only."""
        if secret:
            return cls(secret.encode())
        if api_keys:
            return cls(hashlib.sha256("\n".join(sorted(api_keys)).encode()).digest())
        return cls(secrets.token_bytes(32))

    def seal(self, payload: Any) -> str:
        plain = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        nonce = secrets.token_bytes(_NONCE)
        body = VERSION + nonce + _xor(plain, self._keystream(nonce, len(plain)))
        tag = hmac.new(self._authentication, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(body + tag).decode()

    def unseal(self, blob: str) -> Any:
        try:
            raw = base64.urlsafe_b64decode(blob.encode())
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise Unsealed("not a blob of this server") from None
        if len(raw) < 1 + _NONCE + _TAG or raw[:1] != VERSION:
            raise Unsealed("not a blob of this server")
        body, tag = raw[:-_TAG], raw[-_TAG:]
        expected = hmac.new(self._authentication, body, hashlib.sha256).digest()
        if not hmac.compare_digest(tag, expected):
            raise Unsealed("not a blob of this server")
        nonce, cipher = body[1 : 1 + _NONCE], body[1 + _NONCE :]
        return json.loads(_xor(cipher, self._keystream(nonce, len(cipher))))

    def sign(self, payload: Any) -> str:
        """A signature of `payload` (any JSON value) that only this deployment can make."""
        return base64.urlsafe_b64encode(SIGNATURE + self._tag(payload)).decode()

    def verify(self, payload: Any, signature: str) -> bool:
        """Whether `signature` is this deployment's of exactly `payload`."""
        try:
            raw = base64.urlsafe_b64decode(signature.encode())
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return False
        return raw[:1] == SIGNATURE and hmac.compare_digest(raw[1:], self._tag(payload))

    def _tag(self, payload: Any) -> bytes:
        plain = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        return hmac.new(self._signing, plain, hashlib.sha256).digest()

    def _keystream(self, nonce: bytes, size: int) -> bytes:
        blocks = (size + 31) // 32
        return b"".join(
            hmac.new(self._encryption, nonce + i.to_bytes(8, "big"), hashlib.sha256).digest()
            for i in range(blocks)
        )[:size]


def _xor(data: bytes, stream: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


@dataclass(frozen=True)
class Signer:
    """Signs what one caller is given, and checks what it hands back: a signature made for
    another caller (another API key), or for other text, does not verify."""

    sealer: Sealer
    owner: str

    def sign(self, text: str) -> str:
        return self.sealer.sign({"owner": self.owner, "text": text})

    def verify(self, text: str, signature: str) -> bool:
        return self.sealer.verify({"owner": self.owner, "text": text}, signature)
