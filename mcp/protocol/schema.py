"""Tool-argument validation: JSON Schema Draft 2020-12 (MCP's default ``inputSchema`` dialect) by jsonschema-rs.

A schema is checked against the 2020-12 meta-schema and compiled once (``compile_schema``); a schema
that is not valid 2020-12 raises ``InvalidSchema`` naming the keyword, so a service with a broken tool
refuses to start instead of accepting what it should refuse. A value that does not match raises
``SchemaError`` with the offending field (``depth``, ``meta.x``, ``ids[2]``) and a sentence naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema_rs

Check = Callable[[Any], None]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Keywords whose members are named by the schema author (a property called "type" is not the keyword).
_NAMED_MEMBERS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                            "dependentRequired"})
_TYPES = ("array", "boolean", "integer", "null", "number", "object", "string")
# A value quoted in a message is cut here: arguments can be large, the sentence should stay readable.
_QUOTE_LIMIT = 60


class SchemaError(ValueError):
    """The value does not match the schema. ``field`` is the path of the offending value ("" for the whole)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.reason = message


class InvalidSchema(ValueError):
    """The schema itself is not valid JSON Schema 2020-12; ``keyword`` and ``location`` say where."""

    def __init__(self, keyword: str, location: str, problem: str) -> None:
        super().__init__(f"keyword {keyword!r} at {location or '/'}: {problem}")
        self.keyword = keyword
        self.location = location


def _pointer(path: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _keyword(path: list[str | int]) -> str:
    """The keyword a meta-schema error is about: the last segment that is not a name the author chose."""
    for i in range(len(path) - 1, -1, -1):
        seg = path[i]
        if isinstance(seg, str) and not (i > 0 and path[i - 1] in _NAMED_MEMBERS):
            return seg
    return "$schema" if not path else str(path[0])


def compile_schema(schema: Any) -> Check:
    """Return check(value) that raises SchemaError on a mismatch; raise InvalidSchema if the schema is broken."""
    if not isinstance(schema, dict):
        # MCP requires an object schema for tool input; ``false`` or ``true`` alone is not one.
        raise InvalidSchema("type", "", f"the schema must be a JSON object, not {json.dumps(schema)}")
    if schema.get("type") != "object":
        raise InvalidSchema("type", "/type", 'a tool\'s input schema must say "type": "object" (MCP requires it)')
    declared = schema.get("$schema", DIALECT)
    if declared not in (DIALECT, DIALECT + "#"):
        raise InvalidSchema("$schema", "/$schema", f"only JSON Schema 2020-12 ({DIALECT}) is supported")
    try:
        # offline: a $ref to a URL must not make the service fetch it (or hang) at start.
        validator = jsonschema_rs.Draft202012Validator(schema, offline=True)
    except jsonschema_rs.ValidationError as e:
        path = list(e.instance_path)
        if _kind(e) == "Referencing":
            # An unresolvable $ref is reported without a location; the message names the target.
            raise InvalidSchema("$ref", "", e.message.splitlines()[0]) from None
        keyword, problem = _keyword(path), e.message.splitlines()[0]
        if keyword == "type" and path and path[-1] == "type":
            # The meta-schema's own wording ("not valid under any of the schemas listed in anyOf") helps nobody.
            what = "a list of JSON Schema types" if isinstance(e.instance, list) else "a JSON Schema type"
            problem = f"{json.dumps(e.instance)} is not {what} ({', '.join(_TYPES)})"
        raise InvalidSchema(keyword, _pointer(path), problem) from None
    except jsonschema_rs.ReferencingError as e:
        raise InvalidSchema("$ref", "", str(e).splitlines()[0]) from None
    except ValueError as e:  # a value JSON cannot hold (a set, a NaN), so no keyword to name
        raise InvalidSchema("(value)", "", str(e).splitlines()[0]) from None

    is_valid = validator.is_valid

    def check(value: Any) -> None:
        # The valid case (nearly every call) takes the fast path, which builds no error objects.
        if is_valid(value):
            return
        error = next(iter(validator.iter_errors(value)), None)
        if error is not None:
            raise describe(error)

    return check


def field_name(path: list[str | int] | tuple[str | int, ...]) -> str:
    """``["meta", "x"]`` -> ``meta.x``; ``["ids", 2]`` -> ``ids[2]``."""
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out = f"{out}.{seg}" if out else seg
    return out


def _quote(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _QUOTE_LIMIT else text[:_QUOTE_LIMIT - 3] + "..."


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _kind(error: Any) -> str:
    # The class name, not ``kind.name``: that calls both oneOf failures "oneOf".
    return type(error.kind).__name__


def _sentence(kind: str, details: dict[str, Any], error: Any) -> str:
    """What is wrong, as the rest of a sentence whose subject is the field."""
    if kind == "Type":
        return "must be of type " + " or ".join(details["types"])
    if kind == "Enum":
        return "must be one of " + ", ".join(_quote(v) for v in details["options"])
    if kind == "Constant":
        return f"must be {_quote(details['expected_value'])}"
    if kind in ("Minimum", "Maximum", "ExclusiveMinimum", "ExclusiveMaximum"):
        word = {"Minimum": "at least", "Maximum": "at most", "ExclusiveMinimum": "greater than",
                "ExclusiveMaximum": "less than"}[kind]
        return f"must be {word} {_number(details['limit'])}"
    if kind == "MultipleOf":
        return f"must be a multiple of {_number(details['multiple_of'])}"
    if kind in ("MinLength", "MaxLength"):
        return f"must be {'at least' if kind == 'MinLength' else 'at most'} {details['limit']} characters long"
    if kind == "Pattern":
        return f"must match {details['pattern']!r}"
    if kind in ("MinItems", "MaxItems"):
        return f"must have {'at least' if kind == 'MinItems' else 'at most'} {details['limit']} items"
    if kind in ("MinProperties", "MaxProperties"):
        return f"must have {'at least' if kind == 'MinProperties' else 'at most'} {details['limit']} properties"
    if kind == "UniqueItems":
        return "must not contain the same item twice"
    if kind == "Contains":
        return "must contain at least one matching item"
    if kind == "Not":
        return f"must not match {_quote(details['schema'])}"
    if kind == "FalseSchema":
        return "is not accepted"
    if kind == "OneOfMultipleValid":
        return "matches more than one of the accepted forms; it must match exactly one"
    if kind == "Format":
        return f"must be a valid {details.get('format', 'value')}"
    return "is not valid: " + error.message[:200]


def _first(alternatives: list[list[Any]]) -> list[Any]:
    return [errors[0] for errors in alternatives if errors]


def describe(error: Any) -> SchemaError:
    """The SchemaError for one jsonschema-rs error: the field from its instance path, and a sentence."""
    path = list(error.instance_path)
    kind = _kind(error)
    details = error.kind.as_dict()
    if kind == "Required":
        field = field_name([*path, details["property"]])
        return SchemaError(field, f"{field} is required")
    if kind in ("AdditionalProperties", "UnevaluatedProperties"):
        field = field_name([*path, details["unexpected"][0]])
        return SchemaError(field, f"{field} is not an accepted argument")
    if kind in ("AdditionalItems", "UnevaluatedItems"):
        field = field_name(path)
        return SchemaError(field, f"{field or 'the arguments'} has more items than accepted")
    if kind == "PropertyNames":
        inner = details["error"]
        name = inner.instance
        field = field_name([*path, name]) if isinstance(name, str) else field_name(path)
        return SchemaError(field, f"the name of {field} {_sentence(_kind(inner), inner.kind.as_dict(), inner)}")
    if kind in ("AnyOf", "OneOfNotValid"):
        # Name the field the alternatives agree on (often one property missing in every one of them).
        alternatives = [describe(e) for e in _first(details["context"])]
        if alternatives and all(a.reason.endswith(" is required") for a in alternatives):
            names = [a.field for a in alternatives]
            return SchemaError(names[0], f"one of {', '.join(names)} is required")
        field = field_name(path)
        reasons = "; or ".join(a.reason for a in alternatives)
        return SchemaError(field, f"{field or 'the arguments'} matches none of the accepted forms: {reasons}")
    field = field_name(path)
    return SchemaError(field, f"{field or 'the arguments'} {_sentence(kind, details, error)}")
