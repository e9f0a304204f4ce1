"""The tool-argument validator: each keyword, field paths in errors, and JSON Schema's own semantics."""

from __future__ import annotations

import pytest

from mcp.protocol.schema import SchemaError, compile_schema

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
