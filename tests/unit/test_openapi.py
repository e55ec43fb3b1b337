"""/openapi.json, built in-process: a valid OpenAPI 3.1 document of exactly the gateway's routes,
whose request schemas are the protocol types' own (bodies round-trip through them), whose
extensions are exactly the fields OpenAI's API lacks."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from pydantic import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.routing import Route

from adapters.http import create_app
from adapters.openapi import EXTENSION, build_document
from adapters.operations import OPERATIONS
from common.errors import InvalidRequest, ModelNotFound, Overloaded
from common.protocol.base import ErrorResponse
from common.protocol.messages import error_body as messages_error_body
from common.settings import Settings
from tests.openai_spec import request_fields
from tests.unit.fakes import FakeTextModel, fake_store


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    settings = Settings(cache_dir=tmp_path_factory.mktemp("cache"), api_key="k")
    return create_app(settings, fake_store(FakeTextModel([b"x"])))


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document(OPERATIONS, serves_images=True, metrics=True)


def validator(document: dict[str, Any], schema_name: str) -> Draft202012Validator:
    registry = Registry().with_resource("doc", Resource(document, DRAFT202012))
    return Draft202012Validator(
        {"$ref": f"doc#/components/schemas/{schema_name}"}, registry=registry
    )


def test_the_document_is_valid_openapi_3_1(document):
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def served_spellings(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(method, URL path) of every operation the document lists, under each of its servers."""
    served = set()
    for path, item in document["paths"].items():
        servers = item.get("servers", document["servers"])
        for method in item.keys() - {"servers", "parameters"}:
            for server in servers:
                prefix = server["url"].removeprefix(".")
                served.add((method.upper(), prefix + path))
    return served


def test_the_document_lists_exactly_the_routes_of_the_gateway(app, document):
    routed = set()
    for route in app.routes:
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+):path\}", r"{\1}", route.path)
        routed |= {(method, path) for method in route.methods - {"HEAD"}}
    assert routed == served_spellings(document)


# Answers that are not errors: /health's 503 is its readiness (the same object as its 200), and
# /ping's 204 means "initializing" to RunPod's load balancer.
NOT_ERRORS = {("/health", "503"), ("/ping", "204")}


def test_every_operation_answers_its_errors_in_the_envelope(document):
    envelopes = {(op.method.lower(), op.path): op.dialect.error_schema for op in OPERATIONS}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "servers":
                continue
            envelope = envelopes.get((method, path), ErrorResponse).__name__
            for status, response in operation["responses"].items():
                if (path, status) in NOT_ERRORS:
                    assert "$ref" not in response
                elif status != "200":
                    name = response["$ref"].rsplit("/", 1)[-1]
                    schema = document["components"]["responses"][name]["content"]
                    assert schema["application/json"]["schema"]["$ref"].endswith(f"/{envelope}"), (
                        path,
                        status,
                    )
    anthropic = validator(document, "MessagesErrorResponse")
    anthropic.validate(messages_error_body(InvalidRequest("bad", param="n")))
    envelope = validator(document, "ErrorResponse")
    for error in (InvalidRequest("bad", param="n"), ModelNotFound("m"), Overloaded("busy")):
        envelope.validate(error.envelope())


def test_streams_uploads_and_security_are_described(document):
    chat = document["paths"]["/chat/completions"]["post"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    form = document["paths"]["/audio/transcriptions"]["post"]["requestBody"]["content"]
    fields = form["multipart/form-data"]["schema"]
    assert fields["properties"]["file"]["format"] == "binary"
    assert "timestamp_granularities[]" in fields["properties"]  # as the SDKs send a list
    assert {"file", "model"} <= set(fields["required"])
    speech = document["paths"]["/audio/speech"]["post"]["responses"]["200"]["content"]
    assert {"audio/mpeg", "audio/wav", "text/event-stream"} <= set(speech)
    assert document["paths"]["/health"]["get"]["security"] == [{}]  # open
    assert "security" not in document["paths"]["/metrics"]["get"]  # the document's: a key


@pytest.mark.parametrize(
    "operation",
    [op for op in OPERATIONS if op.body and op.dialect.error_schema is ErrorResponse],
    ids=lambda o: o.name,
)
def test_extensions_are_exactly_the_fields_openai_lacks(document, operation):
    """(Of OpenAI's operations: Anthropic's Messages API is Anthropic's, field for field.)"""
    spec = "openapi-2023-12-22-edits.yaml" if operation.path == "/edits" else "openapi.yaml"
    try:
        openai = request_fields(operation.method, operation.path, spec)
    except KeyError:  # not OpenAI's operation (llama.cpp's and vLLM's /tokenize): all extensions
        openai = set()
    properties = document["components"]["schemas"][operation.body.__name__]["properties"]
    marked = {name for name, field in properties.items() if field.get(EXTENSION)}
    assert marked == set(properties) - openai


@pytest.mark.parametrize("operation", [op for op in OPERATIONS if op.body], ids=lambda o: o.name)
def test_request_bodies_round_trip_through_the_protocol_types(document, operation):
    """Bodies generated from the document parse into the protocol type, and what the type
    writes back is valid under the document and parses into the same request."""
    import schemathesis

    schema = schemathesis.openapi.from_dict(document)
    (result,) = schema.include(path=operation.path, method=operation.method).get_all_operations()
    strategy = result.ok().as_strategy()
    check = validator(document, operation.body.__name__)
    outcomes = {"parsed": 0, "refused": 0}

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.data())
    def round_trip(data: st.DataObject) -> None:
        body = data.draw(strategy).body
        if operation.form:
            body = {k.removesuffix("[]"): v for k, v in body.items() if k != "file"}
        try:
            parsed = operation.body.model_validate(body)
        except ValidationError:  # a check the schema cannot say (a size's shape, say)
            outcomes["refused"] += 1
            return
        outcomes["parsed"] += 1
        written = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        check.validate(written)
        assert operation.body.model_validate(written) == parsed

    round_trip()
    # Most refusals are rules between fields that the schema cannot say (chat's top_logprobs
    # without logprobs: about a quarter of chat's bodies); most bodies must still parse.
    assert outcomes["parsed"] >= 2 * outcomes["refused"], outcomes
