"""Objects that list their properties are closed in every grammar (layers/structured): a tool
call or a JSON answer cannot grow keys its schema does not name, unless the schema says
`"additionalProperties": true` (JSON Schema's own default, kept where it is written)."""

from __future__ import annotations

from layers.structured import closed_objects, json_schema_grammar
from tests.unit.grammar_check import accepts

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_a_listed_object_takes_no_other_keys_unless_its_schema_says_so():
    closed = json_schema_grammar(CITY, "schema")
    assert accepts(closed, '{"city": "Oslo"}')
    assert not accepts(closed, '{"city": "Oslo", "unit": "c"}')
    open_ = json_schema_grammar({**CITY, "additionalProperties": True}, "schema")
    assert accepts(open_, '{"city": "Oslo", "unit": "c"}')
    anything = json_schema_grammar({"type": "object"}, "schema")  # lists nothing: any object
    assert accepts(anything, '{"unit": "c"}')


def test_nested_objects_are_closed_and_all_of_branches_are_left_as_written():
    schema = {
        "type": "object",
        "properties": {
            "place": CITY,
            "stops": {"type": "array", "items": CITY},
            "either": {"anyOf": [CITY, {"type": "string"}]},
        },
        "$defs": {"c": CITY},
        "allOf": [CITY, {"properties": {"unit": {"type": "string"}}}],
    }
    closed = closed_objects(schema)
    assert "additionalProperties" not in closed  # beside an allOf: the branches intersect
    assert closed["allOf"] == schema["allOf"]
    for inner in (
        closed["properties"]["place"],
        closed["properties"]["stops"]["items"],
        closed["properties"]["either"]["anyOf"][0],
        closed["$defs"]["c"],
    ):
        assert inner["additionalProperties"] is False
    assert "additionalProperties" not in CITY  # the caller's schema is not changed
    patterned = {"type": "object", "properties": {}, "patternProperties": {"^x": {}}}
    assert closed_objects(patterned) == patterned
