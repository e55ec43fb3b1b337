"""OpenAI protocol types, field for field with OpenAI's API reference, in one place.

Requests accept and ignore unknown fields (clients send extras); known fields are validated.
`parse_request` turns a pydantic ValidationError into an InvalidRequest naming the param.
"""

from common.protocol.base import parse_request

__all__ = ["parse_request"]
