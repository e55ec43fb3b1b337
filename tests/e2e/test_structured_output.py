"""response_format with the real model: JSON mode, JSON schemas (the SDK's parse helper,
streamed, generated schemas), refusals of what cannot be enforced, cuts by max_tokens."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from tests.openai_spec import check
from tests.platforms import sse

ASK = [{"role": "user", "content": "Describe a person."}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "email": {"type": "string", "format": "email"},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "address": {"$ref": "#/$defs/address"},
        "nickname": {"anyOf": [{"type": "string", "pattern": "^[a-z]{2,6}$"}, {"type": "null"}]},
        "kind": {"const": "person"},
        "score": {"type": "number", "minimum": -1, "maximum": 1},
    },
    "required": ["name", "age", "email", "role", "tags", "address", "nickname", "kind", "score"],
    "additionalProperties": False,
    "$defs": {
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        }
    },
}


def schema_format(schema, name="answer", strict=True):
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": schema, "strict": strict},
    }


def test_json_mode_answers_a_json_object(client):
    answer = client.chat.completions.create(
        model="gpt-4o",
        messages=ASK,
        response_format={"type": "json_object"},
        max_tokens=200,
        temperature=0,
    )
    assert answer.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(answer.choices[0].message.content), dict)
    check("CreateChatCompletionResponse", answer.model_dump(exclude_unset=True))


@pytest.mark.parametrize("stream", [False, True])
def test_a_json_schema_is_followed(http, stream):
    body = {
        "model": "gpt-4o",
        "messages": ASK,
        "response_format": schema_format(PERSON),
        "max_tokens": 300,
        "temperature": 0,
        "stream": stream,
    }
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    if stream:
        events = sse(response.text)[:-1]
        content = "".join(
            e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]
        )
        assert (
            sum(1 for e in events if e["choices"] and e["choices"][0]["delta"].get("content")) > 3
        )
    else:
        content = response.json()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), PERSON, format_checker=jsonschema.FormatChecker())


def test_the_sdk_parse_helper_returns_the_pydantic_object(client):
    class Step(BaseModel):
        explanation: str = Field(max_length=60)
        output: str = Field(max_length=30)

    class Math(BaseModel):
        steps: list[Step] = Field(max_length=2)
        final_answer: str = Field(max_length=20)

    answer = client.chat.completions.parse(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Solve 8x + 7 = -23"}],
        response_format=Math,
        temperature=0,
        max_tokens=400,
    )
    assert isinstance(answer.choices[0].message.parsed, Math)


def test_a_cut_by_max_tokens_is_length_not_an_error(client):
    answer = client.chat.completions.create(
        model="gpt-4o", messages=ASK, response_format=schema_format(PERSON), max_tokens=5
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content.startswith("{")


BAD = [
    ({"type": "json_schema"}, "response_format"),
    ({"type": "xml"}, "response_format.type"),
    (schema_format({"type": "object", "if": {}, "then": {}}), "response_format.json_schema.schema"),
    (schema_format({"type": "strnig"}), "response_format.json_schema.schema"),
    (schema_format({"$ref": "#/$defs/missing"}), "response_format.json_schema.schema"),
    (schema_format({"type": "array", "uniqueItems": True}), "response_format.json_schema.schema"),
    (
        {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}},
        "response_format.json_schema.name",
    ),
]


@pytest.mark.parametrize("response_format,param", BAD, ids=[p for _, p in BAD])
def test_schemas_that_cannot_be_enforced_are_400s(http, response_format, param):
    body = {"model": "gpt-4o", "messages": ASK, "response_format": response_format}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_the_refusal_names_the_keyword(http):
    body = {
        "model": "gpt-4o",
        "messages": ASK,
        "response_format": schema_format({"type": "object", "if": {}, "then": {}}),
    }
    message = http.post("/v1/chat/completions", json=body).json()["error"]["message"]
    assert '"if"' in message and '"then"' in message


# Generated schemas: a common JSON-schema subset, bounded so that answers end well within the
# token budget; whatever the model (sampling at temperature 1), every answer must validate.
leaves = st.one_of(
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(
        lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
        st.integers(-50, 50),
        st.integers(0, 100),
    ),
    st.builds(
        lambda lo: {"type": "number", "minimum": lo, "maximum": lo + 10}, st.integers(-10, 10)
    ),
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 12)),
    st.builds(
        lambda p: {"type": "string", "pattern": p},
        st.sampled_from(["^[a-z]{1,5}$", "^[0-9]{3}-[0-9]{2}$", "^(yes|no)$"]),
    ),
    st.builds(
        lambda values: {"enum": values},
        st.lists(st.text("abcxyz", min_size=1, max_size=4), min_size=1, max_size=4, unique=True),
    ),
    st.builds(lambda v: {"const": v}, st.integers(0, 9)),
)


def _object(properties: dict) -> dict:
    names = sorted(properties)
    return {
        "type": "object",
        "properties": properties,
        "required": names[: len(names) // 2 + 1],
        "additionalProperties": False,
    }


schemas = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(
            lambda item, n: {"type": "array", "items": item, "maxItems": n},
            inner,
            st.integers(0, 3),
        ),
        st.builds(
            _object,
            st.dictionaries(
                st.text("abcdefgh", min_size=1, max_size=5), inner, min_size=1, max_size=3
            ),
        ),
        st.builds(lambda options: {"anyOf": options}, st.lists(inner, min_size=2, max_size=3)),
    ),
    max_leaves=6,
).map(lambda s: s if s.get("type") == "object" else _object({"value": s}))


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(schema=schemas, seed=st.integers(0, 2**31))
def test_every_answer_to_a_generated_schema_validates(client, schema, seed):
    answer = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Answer in JSON."}],
        response_format=schema_format(schema),
        temperature=1.0,
        seed=seed,
        max_tokens=250,
    )
    choice = answer.choices[0]
    if choice.finish_reason == "length":
        # JSON numbers have no bound on their digits: sampling at temperature 1, a small model
        # can write one for ever (seen: 0 <= aa <= 10 as 3.7992505909...). Valid so far, cut.
        assert choice.message.content
        return
    assert choice.finish_reason == "stop", (schema, choice.message.content)
    jsonschema.validate(json.loads(choice.message.content), schema)
