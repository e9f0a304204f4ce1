"""Drive an instance URL with the official MCP Python SDK (run by the SDK's own venv, never imported).

Usage: ``python -I sdk_client.py <instance mcp url> <auto|legacy>``. Connects, lists the tools,
calls ``get_me`` (reaches the upstream), calls ``get_file`` without its required argument (an
isError result), calls an unknown tool (a protocol error), and prints what it saw as one JSON
object; a JSON-RPC error that ends the session early is printed as ``{"error": {code, message}}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib.metadata import version

from mcp import Client, MCPError


def _result(result):
    return {"is_error": result.is_error, "structured": result.structured_content,
            "text": [block.text for block in result.content if block.type == "text"]}


async def main(url: str, mode: str) -> dict:
    seen: dict = {"sdk_version": version("mcp")}
    async with Client(url, mode=mode) as client:
        seen["protocol_version"] = client.protocol_version
        seen["server_info"] = client.server_info.model_dump(mode="json") if client.server_info else None
        listed = await client.list_tools()
        seen["tools"] = [tool.name for tool in listed.tools]
        seen["next_cursor"] = listed.next_cursor
        seen["get_me"] = _result(await client.call_tool("get_me", {}))
        seen["invalid"] = _result(await client.call_tool("get_file", {}))
        try:
            await client.call_tool("no_such_tool", {})
            seen["protocol_error"] = None
        except MCPError as e:
            seen["protocol_error"] = {"code": e.code, "message": e.message}
    return seen


def _first_mcp_error(group: BaseExceptionGroup) -> MCPError:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_mcp_error(exc)
        if isinstance(exc, MCPError):
            return exc
    raise group


async def run(url: str, mode: str) -> dict:
    try:
        return await main(url, mode)
    except MCPError as e:
        return {"error": {"code": e.code, "message": e.message}}
    except BaseExceptionGroup as group:  # the client's task group wraps what ended the session
        e = _first_mcp_error(group)
        return {"error": {"code": e.code, "message": e.message}}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(sys.argv[1], sys.argv[2]))))
