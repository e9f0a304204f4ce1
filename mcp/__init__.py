"""The MCP platform toolkit; the names below are what a service author needs (see README, "Adding a service").

``from mcp import Service, ServiceConfig, Tool, object_schema, json_answer, ...``

The names are loaded on first use (PEP 562), so ``import mcp.paths`` or ``import mcp.ports`` in a light
process (the supervisor, the scripts) does not pull in Tornado and aiohttp with the serving runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp.errors import BadRequest, NotFound, ToolError, UpstreamError
    from mcp.protocol.schemas import ANY_OBJECT, object_schema, output_schema
    from mcp.protocol.tools import Tool
    from mcp.server.app import run
    from mcp.server.endpoints import InstanceHandler
    from mcp.server.upstream import UpstreamHTTP, UpstreamResponse, default_error, json_answer, parse_retry_after
    from mcp.service import Service, ServiceConfig

# Public name -> the module that defines it.
_WHERE = {
    "Service": "mcp.service",
    "ServiceConfig": "mcp.service",
    "Tool": "mcp.protocol.tools",
    "ToolError": "mcp.errors",
    "UpstreamError": "mcp.errors",
    "BadRequest": "mcp.errors",
    "NotFound": "mcp.errors",
    "UpstreamHTTP": "mcp.server.upstream",
    "UpstreamResponse": "mcp.server.upstream",
    "json_answer": "mcp.server.upstream",
    "default_error": "mcp.server.upstream",
    "parse_retry_after": "mcp.server.upstream",
    "InstanceHandler": "mcp.server.endpoints",
    "object_schema": "mcp.protocol.schemas",
    "output_schema": "mcp.protocol.schemas",
    "ANY_OBJECT": "mcp.protocol.schemas",
    "run": "mcp.server.app",
}

__all__ = [
    "ANY_OBJECT",
    "BadRequest",
    "InstanceHandler",
    "NotFound",
    "Service",
    "ServiceConfig",
    "Tool",
    "ToolError",
    "UpstreamError",
    "UpstreamHTTP",
    "UpstreamResponse",
    "default_error",
    "json_answer",
    "object_schema",
    "output_schema",
    "parse_retry_after",
    "run",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mcp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
