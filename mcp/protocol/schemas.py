"""Building blocks for tools' JSON Schemas, so every service writes its schemas the same way.

A tool's ``inputSchema`` is strict by default (unknown arguments are refused, so a misspelt optional
argument is reported instead of silently ignored); its ``outputSchema`` only describes what comes
back, so it stays open for fields an upstream adds later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Any JSON object: the output schema of a tool that returns an upstream document as it is.
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def object_schema(properties: Mapping[str, Any], required: Sequence[str] | None = None, *,
                  additional: bool = False, **keywords: Any) -> dict[str, Any]:
    """An input schema: an object with these properties, these required, no others unless ``additional``.

    ``keywords`` are further JSON Schema keywords for the object itself (e.g. ``anyOf`` for "text or
    blocks"). The key order is fixed, so a tool's ``inputSchema`` reads the same in every tools/list.
    """
    return {"type": "object", "properties": dict(properties), "required": list(required or []),
            "additionalProperties": additional, **keywords}


def output_schema(properties: Mapping[str, Any]) -> dict[str, Any]:
    """An output schema: an object whose listed properties have these shapes; others may appear."""
    return {"type": "object", "properties": dict(properties)}
