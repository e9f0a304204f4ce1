"""Strict JSON input: what the JSON grammar allows, and nothing Python's json module adds.

Both the REST endpoints and the JSON-RPC endpoint parse request bodies here, so both refuse the
same things: invalid UTF-8, NaN/Infinity/1e999, integers too long to convert, lone UTF-16
surrogates, and nesting deeper than ``MAX_JSON_DEPTH``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any


class JsonInputError(ValueError):
    """The input is not JSON this platform accepts; the message says why, for a person."""


class _NotJson(ValueError):
    """A value Python's json module accepts but JSON does not have (NaN, Infinity, 1e999)."""


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJson(f"the number {text[:32]} is out of range")
    return value


# A \uD800-\uDFFF escape; only bodies holding one need the search for a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")

# Deeper bodies are refused: json.loads gives up near the recursion limit (~990 levels, fewer the
# deeper the stack it runs on), and values a little shallower than that made json.dumps fail
# further down a tool call (an internal error). No request needs a fraction of this depth.
MAX_JSON_DEPTH = 256


def _refusal(value: Any, surrogates: bool) -> str | None:
    """Why a parsed body is refused (nested too deeply, a lone surrogate), or None. Iterative, as bodies
    nest deeply; strings are searched for surrogates only when ``surrogates``."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if surrogates and _SURROGATE.search(item):
                return ("it holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not a "
                        "Unicode character")
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                return f"it is nested more than {MAX_JSON_DEPTH} levels deep"
            if isinstance(item, dict):
                if surrogates:
                    stack.extend((key, depth) for key in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return None


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def parse_json(raw: bytes) -> Any:
    """Parse UTF-8 JSON strictly; JsonInputError saying why when it is refused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonInputError("it is not valid UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise JsonInputError(f"{e.msg} at line {e.lineno} column {e.colno}") from None
    except _NotJson as e:
        raise JsonInputError(str(e)) from None
    except ValueError:  # an integer with more digits than int() converts (sys.get_int_max_str_digits)
        raise JsonInputError("a number in it has too many digits") from None
    except RecursionError:
        raise JsonInputError("it is nested too deeply") from None
    # A plain substring test first: most bodies hold no escape at all, and the search walks the whole body.
    surrogates = "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None
    if not surrogates and text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return value  # the usual body: no nesting can reach the limit, nothing to search for
    refusal = _refusal(value, surrogates=surrogates)
    if refusal:
        raise JsonInputError(refusal)
    return value
