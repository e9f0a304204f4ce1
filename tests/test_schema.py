"""The tool-argument validator: each keyword, field paths in errors, and JSON Schema's own semantics."""

from __future__ import annotations

import pytest

from mcp.protocol.schema import InvalidSchema, SchemaError, compile_schema

SCHEMA = {
    "type": "object",
    "properties": {
        "key": {"type": "string", "pattern": "^[a-z]+$", "minLength": 2, "maxLength": 5},
        "n": {"type": "integer", "minimum": 1, "maximum": 10},
        "fmt": {"enum": ["png", "svg"]},
        "flag": {"type": "boolean"},
        "ids": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        "meta": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]},
        "one": {"enum": [1, 2]},
    },
    "required": ["key"],
    "additionalProperties": False,
}
check = compile_schema(SCHEMA)


def test_a_valid_value_passes():
    check({"key": "abc", "n": 3, "fmt": "png", "flag": True, "ids": ["a"], "meta": {"x": 1.5}, "one": 1})
    check({"key": "ab", "n": 4.0})  # 4.0 is an integer in JSON Schema


@pytest.mark.parametrize("value,field", [
    ({}, "key"), ({"key": 1}, "key"), ({"key": "ABC"}, "key"), ({"key": "a"}, "key"), ({"key": "abcdef"}, "key"),
    ({"key": "abc\n"}, "key"),  # "$" does not match before a trailing newline in JSON Schema
    ({"key": "ab", "n": 0}, "n"), ({"key": "ab", "n": 11}, "n"), ({"key": "ab", "n": 1.5}, "n"),
    ({"key": "ab", "n": True}, "n"), ({"key": "ab", "fmt": "gif"}, "fmt"), ({"key": "ab", "flag": "yes"}, "flag"),
    ({"key": "ab", "ids": []}, "ids"), ({"key": "ab", "ids": ["a", "b", "c"]}, "ids"),
    ({"key": "ab", "ids": ["a", 2]}, "ids[1]"), ({"key": "ab", "meta": {}}, "meta.x"),
    ({"key": "ab", "meta": {"x": "1"}}, "meta.x"), ({"key": "ab", "other": 1}, "other"),
    ({"key": "ab", "one": True}, "one"),  # True == 1 in Python, not in JSON
])
def test_each_violation_names_its_field(value, field):
    with pytest.raises(SchemaError) as err:
        check(value)
    assert err.value.field == field
    assert field in str(err.value)


# JSON Schema 2020-12 keywords: each one is enforced, not skipped --------------------------------------

KEYWORDS = [
    # keyword, schema of property "v", a passing value, a failing value, the field the failure names
    ("$ref/$defs", {"$ref": "#/$defs/slug"}, "ab", "AB", "v"),
    ("allOf", {"allOf": [{"type": "string"}, {"minLength": 3}]}, "abc", "ab", "v"),
    ("not", {"not": {"type": "string"}}, 1, "a", "v"),
    ("if/then", {"if": {"minimum": 10}, "then": {"multipleOf": 10}}, 20, 15, "v"),
    ("exclusiveMinimum", {"type": "number", "exclusiveMinimum": 0}, 0.5, 0, "v"),
    ("multipleOf", {"type": "integer", "multipleOf": 5}, 10, 12, "v"),
    ("uniqueItems", {"type": "array", "uniqueItems": True}, [1, 2], [1, 1], "v"),
    ("patternProperties", {"type": "object", "patternProperties": {"^n_": {"type": "integer"}}},
     {"n_a": 1, "x": "s"}, {"n_a": "1"}, "v.n_a"),
    ("prefixItems", {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
     ["a", 1], ["a", "b"], "v[1]"),
    ("prefixItems+items:false", {"type": "array", "prefixItems": [{"type": "string"}], "items": False},
     ["a"], ["a", "b"], "v[1]"),
    ("dependentRequired", {"type": "object", "dependentRequired": {"since": ["until"]}},
     {"since": 1, "until": 2}, {"since": 1}, "v.until"),
    ("propertyNames", {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}, {"ab": 1}, {"aB": 1}, "v.aB"),
    ("oneOf", {"oneOf": [{"type": "integer"}, {"minimum": 2}]}, 1, 3, "v"),  # 3 matches both: refused
    ("const", {"const": 1}, 1, True, "v"),  # true is not 1 in JSON
    ("const (number)", {"const": 1}, 1.0, 2, "v"),
    ("false subschema", False, None, 1, "v"),
]


def keyword_check(sub):
    return compile_schema({"type": "object", "$defs": {"slug": {"type": "string", "pattern": "^[a-z]+$"}},
                           "properties": {"v": sub}})


@pytest.mark.parametrize("keyword,sub,good,bad,field", KEYWORDS, ids=[k[0] for k in KEYWORDS])
def test_each_2020_12_keyword_is_enforced(keyword, sub, good, bad, field):
    check = keyword_check(sub)
    if good is not None:
        check({"v": good})
    with pytest.raises(SchemaError) as err:
        check({"v": bad})
    assert err.value.field == field
    assert field in str(err.value)


def test_one_of_accepts_exactly_one_match():
    check = keyword_check({"oneOf": [{"type": "integer"}, {"type": "string"}]})
    check({"v": 1})
    check({"v": "a"})
    with pytest.raises(SchemaError, match="none of the accepted forms"):
        check({"v": []})
    check = keyword_check({"oneOf": [{"type": "integer"}, {"minimum": 2}]})
    with pytest.raises(SchemaError, match="exactly one"):
        check({"v": 3})


def test_any_of_over_required_names_the_alternatives():
    check = compile_schema({"type": "object", "properties": {"text": {}, "blocks": {}},
                            "anyOf": [{"required": ["text"]}, {"required": ["blocks"]}]})
    check({"blocks": []})
    with pytest.raises(SchemaError) as err:
        check({})
    assert err.value.field == "text" and str(err.value) == "one of text, blocks is required"


def test_messages_are_sentences_naming_the_field():
    cases = [({}, "key is required"), ({"key": "ab", "n": 11}, "n must be at most 10"),
             ({"key": "ab", "ids": ["a", 2]}, "ids[1] must be of type string"),
             ({"key": "ab", "other": 1}, "other is not an accepted argument"),
             ({"key": "ab", "fmt": "gif"}, 'fmt must be one of "png", "svg"'),
             ({"key": "ab", "meta": {}}, "meta.x is required")]
    for value, message in cases:
        with pytest.raises(SchemaError) as err:
            check(value)
        assert str(err.value) == message


def test_a_long_value_is_not_echoed_whole():
    check = keyword_check({"not": {"type": "string"}})
    with pytest.raises(SchemaError) as err:
        check({"v": "x" * 10_000})
    assert len(str(err.value)) < 200


def test_huge_and_deep_values_are_judged_not_crashed_on():
    check = keyword_check({"type": "integer", "maximum": 5})
    with pytest.raises(SchemaError, match="at most 5"):
        check({"v": 10 ** 30})
    deep: list = []
    node = deep
    for _ in range(2000):
        node.append([])
        node = node[0]
    keyword_check({"type": "array"})({"v": deep})


@pytest.mark.parametrize("schema,keyword", [
    ({"type": "object", "properties": {"a": {"type": "strnig"}}}, "type"),  # unknown type name
    ({"type": "object", "properties": {"a": {"type": ["string", "nope"]}}}, "type"),
    ({"type": "object", "properties": {"type": {"minimum": "1"}}}, "minimum"),  # a property called "type"
    ({"type": "object", "properties": {"a": {"pattern": "("}}}, "pattern"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "$ref"),
    ({"type": "object", "properties": {"a": {"$ref": "https://example.invalid/s.json"}}}, "$ref"),  # never fetched
    ({"type": "object", "required": "a"}, "required"),
    ({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}, "$schema"),
    (False, "type"),  # MCP wants an object schema: false alone accepts no call at all
    (True, "type"),
])
def test_an_invalid_schema_refuses_to_compile_naming_the_keyword(schema, keyword):
    with pytest.raises(InvalidSchema) as err:
        compile_schema(schema)
    assert err.value.keyword == keyword
    assert repr(keyword) in str(err.value)


def test_a_tool_input_schema_must_describe_an_object():
    for schema in ({}, {"type": "array"}, {"properties": {"a": {"type": "string"}}}):
        with pytest.raises(InvalidSchema) as err:
            compile_schema(schema)
        assert err.value.keyword == "type" and "object" in str(err.value)
