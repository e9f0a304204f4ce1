"""The ``"tools"`` field of an instance: which of its service's tools the instance may list and call.

Two shapes are accepted, and ``null`` (every tool, the default):

- ``{"allow": ["get_file", ...]}``: those tools only. Every name must be one of the service's tools
  (``mcp_table.tools``, written by ``db/migrate.py`` from the service package); duplicates are dropped.
  An empty list is accepted and allows no tool: an operator who sends it gets what they said, and a
  misreading of it fails closed.
- ``{"read_only": true}``: the tools annotated ``readOnlyHint`` (``Tool.read_only``), as the service
  has them when a call is made. ``false`` is refused: "every tool" is ``null``, so one value means it.

The service processes enforce the stored policy (``mcp.protocol.tools.ToolRegistry.allowing``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mcp.errors import BadRequest

FIELD = "tools"
SHAPES = '{"allow": [tool names]} or {"read_only": true}'
# How many unknown names an error lists (the rest are counted): the message stays readable.
MAX_NAMED = 10


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, field=FIELD, code="invalid_tool_policy")


def _show(name: str) -> str:
    return repr(name if len(name) <= 64 else name[:61] + "...")


def parse_tool_policy(value: Any, service: str, tools: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The policy to store for ``value`` (None: every tool), or BadRequest saying what is wrong.

    ``tools`` is the service's ``mcp_table.tools``: ``[{"name": str, "read_only": bool}]``.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"'tools' must be {SHAPES}, or null for every tool")
    if set(value) == {"read_only"}:
        if value["read_only"] is not True:
            raise _invalid("'tools.read_only' can only be true; to allow every tool send \"tools\": null")
        return {"read_only": True}
    if set(value) == {"allow"}:
        allow = value["allow"]
        if not isinstance(allow, list) or not all(isinstance(name, str) for name in allow):
            raise _invalid("'tools.allow' must be a list of tool names (strings)")
        names = list(dict.fromkeys(allow))
        known = [t["name"] for t in tools]
        unknown = [name for name in names if name not in known]
        if unknown:
            listed = ", ".join(_show(name) for name in unknown[:MAX_NAMED])
            more = f" and {len(unknown) - MAX_NAMED} more" if len(unknown) > MAX_NAMED else ""
            raise BadRequest(f"unknown tool(s) for {service}: {listed}{more}; available: {', '.join(known)}",
                             field=FIELD, code="unknown_tool")
        return {"allow": names}
    got = ", ".join(_show(str(k)) for k in list(value)[:MAX_NAMED]) or "an empty object"
    raise _invalid(f"'tools' must be exactly one of {SHAPES} (got {got}); null allows every tool")
