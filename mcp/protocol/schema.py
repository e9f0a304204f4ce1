"""A small JSON Schema validator for tool arguments, compiled once per schema.

Supports the subset tool schemas use: type (incl. lists and "integer"), properties, required,
additionalProperties (bool or schema), enum, const, minimum/maximum, minLength/maxLength, pattern,
items, minItems/maxItems, anyOf/oneOf. Errors name the offending field as a dotted path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any, str], None]


class SchemaError(ValueError):
    """The value does not match the schema. ``field`` is the dotted path of the offending value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


def _is_integer(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": _is_integer,
    "number": _is_number,
    "null": lambda v: v is None,
}


def _is_type(value: Any, t: str) -> bool:
    test = _TYPE_TESTS.get(t)
    return test is None or test(value)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def compile_schema(schema: dict[str, Any]) -> Check:
    """Return check(value, path) that raises SchemaError on the first mismatch."""
    checks: list[Check] = []
    t = schema.get("type")
    if t is not None:
        types = [t] if isinstance(t, str) else list(t)
        label = " or ".join(types)
        if len(types) == 1:
            test = _TYPE_TESTS.get(types[0], lambda v: True)  # the usual case, checked on every call

            def check_type(v: Any, p: str) -> None:
                if not test(v):
                    raise SchemaError(p, f"must be of type {label}")
        else:
            def check_type(v: Any, p: str) -> None:
                if not any(_is_type(v, x) for x in types):
                    raise SchemaError(p, f"must be of type {label}")

        checks.append(check_type)
    if "enum" in schema:
        allowed = list(schema["enum"])

        def check_enum(v: Any, p: str) -> None:
            # True == 1 in Python; JSON Schema keeps booleans and numbers apart.
            if not any(v == a and isinstance(v, bool) == isinstance(a, bool) for a in allowed):
                raise SchemaError(p, "must be one of " + ", ".join(repr(a) for a in allowed))

        checks.append(check_enum)
    if "const" in schema:
        const = schema["const"]

        def check_const(v: Any, p: str) -> None:
            if v != const:
                raise SchemaError(p, f"must be {const!r}")

        checks.append(check_const)
    for key, op, word in (("minimum", float.__lt__, "at least"), ("maximum", float.__gt__, "at most")):
        if key in schema:
            bound = float(schema[key])

            def check_bound(v: Any, p: str, bound: float = bound, op: Any = op, word: str = word) -> None:
                if isinstance(v, int | float) and not isinstance(v, bool) and op(float(v), bound):
                    raise SchemaError(p, f"must be {word} {bound:g}")

            checks.append(check_bound)
    for key, cmp, word in (("minLength", int.__lt__, "at least"), ("maxLength", int.__gt__, "at most")):
        if key in schema:
            n = int(schema[key])

            def check_len(v: Any, p: str, n: int = n, cmp: Any = cmp, word: str = word) -> None:
                if isinstance(v, str) and cmp(len(v), n):
                    raise SchemaError(p, f"must be {word} {n} characters long")

            checks.append(check_len)
    if "pattern" in schema:
        rx = re.compile(schema["pattern"])
        # ECMA's "$" matches only at the very end; Python's also before a final newline.
        anchored = rx.pattern.endswith("$") and not rx.pattern.endswith("\\$")

        def check_pattern(v: Any, p: str) -> None:
            if not isinstance(v, str):
                return
            m = rx.search(v)
            if m is None or (anchored and m.end() != len(v)):
                raise SchemaError(p, f"must match {rx.pattern!r}")

        checks.append(check_pattern)
    for key, cmp, word in (("minItems", int.__lt__, "at least"), ("maxItems", int.__gt__, "at most")):
        if key in schema:
            n = int(schema[key])

            def check_items_len(v: Any, p: str, n: int = n, cmp: Any = cmp, word: str = word) -> None:
                if isinstance(v, list) and cmp(len(v), n):
                    raise SchemaError(p, f"must have {word} {n} items")

            checks.append(check_items_len)
    if isinstance(schema.get("items"), dict):
        item_check = compile_schema(schema["items"])

        def check_items(v: Any, p: str) -> None:
            if isinstance(v, list):
                for i, item in enumerate(v):
                    item_check(item, _join(p, i))

        checks.append(check_items)
    props: dict[str, Check] = {k: compile_schema(s) for k, s in (schema.get("properties") or {}).items()}
    required = list(schema.get("required") or [])
    extra = schema.get("additionalProperties", True)
    extra_check = compile_schema(extra) if isinstance(extra, dict) else None
    if props or required or extra is not True:

        def check_object(v: Any, p: str) -> None:
            if not isinstance(v, dict):
                return
            for name in required:
                if name not in v:
                    raise SchemaError(_join(p, name), "is required")
            for name, value in v.items():
                sub = props.get(name)
                if sub is not None:
                    sub(value, _join(p, name))
                elif extra is False:
                    raise SchemaError(_join(p, name), "is not an accepted argument")
                elif extra_check is not None:
                    extra_check(value, _join(p, name))

        checks.append(check_object)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            alternatives = [compile_schema(s) for s in schema[key]]

            def check_any(v: Any, p: str, alternatives: list[Check] = alternatives) -> None:
                errors: list[SchemaError] = []
                for alt in alternatives:
                    try:
                        alt(v, p)
                        return
                    except SchemaError as e:
                        errors.append(e)
                raise errors[0]

            checks.append(check_any)

    if len(checks) == 1:
        return checks[0]

    def check(value: Any, path: str = "") -> None:
        for c in checks:
            c(value, path)

    return check
