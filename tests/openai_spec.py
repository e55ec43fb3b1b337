"""Responses checked against OpenAI's own OpenAPI document.

tests/openai-spec/ is a copy of the workspace's ../shared/openai-spec (MIT, see SOURCE.md there),
kept in the repository so that a fresh clone anywhere validates against the same document.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

SPEC_DIR = Path(__file__).resolve().parent / "openai-spec"


@functools.cache
def _validator(schema_name: str, file: str) -> Any:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    document = _document(file)
    registry = Registry().with_resource("spec", Resource(document, DRAFT202012))
    return Draft202012Validator(
        {"$ref": f"spec#/components/schemas/{schema_name}"}, registry=registry
    )


@functools.cache
def _document(file: str) -> dict[str, Any]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(SPEC_DIR / file, encoding="utf-8") as handle:
        return _nullable_as_json_schema(yaml.load(handle, Loader=loader))


def _nullable_as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema's null type (older parts of the spec)."""
    if isinstance(node, list):
        return [_nullable_as_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable_as_json_schema(v) for k, v in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def check(schema_name: str, body: Any, file: str = "openapi.yaml") -> None:
    """Raises with every violation of OpenAI's schema `schema_name` in `body` (decoded JSON)."""
    validator = _validator(schema_name, file)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}" for e in errors]
        raise AssertionError(f"not a valid {schema_name}:\n" + "\n".join(lines[:20]))


def request_fields(method: str, path: str, file: str = "openapi.yaml") -> set[str]:
    """The top-level fields of an operation's request body in OpenAI's spec (JSON or form)."""
    document = _document(file)
    operation = document["paths"][path][method.lower()]
    content = operation["requestBody"]["content"]
    schema = next(iter(content.values()))["schema"]
    return set(_properties(document, schema))


def _properties(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _properties(document, document["components"]["schemas"][name])
    found = dict(schema.get("properties", {}))
    for part in (*schema.get("allOf", ()), *schema.get("anyOf", ()), *schema.get("oneOf", ())):
        found.update(_properties(document, part))
    return found
