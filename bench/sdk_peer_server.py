"""The peer: the same tool on the official MCP Python SDK's own Streamable HTTP server.

Run ONLY by the SDK's virtual environment (``.cache/bench-sdk-venv/bin/python bench/sdk_peer_server.py
--port N --upstream URL --token T``); the project never imports it, nor the SDK. Stateless, JSON
responses, one tool ``get_me`` making the same aiohttp call to the upstream simulator with the same
session settings as the platform (``peer_upstream``). Server defaults otherwise (uvicorn as the SDK
starts it, its log level INFO, so one access line per request, as the platform writes).
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer  # the SDK, from this script's own environment
from peer_upstream import Me, peer_arguments  # beside this script


def build(upstream_url: str, token: str) -> MCPServer:
    server = MCPServer(name="figma-peer", version="1.0.0")
    me = Me(upstream_url, token)

    @server.tool(name="get_me", description="The Figma user this token belongs to (id, handle, email).")
    async def get_me() -> dict[str, Any]:
        return await me.get()

    return server


def main() -> None:
    args = peer_arguments(__doc__.splitlines()[0])
    build(args.upstream, args.token).run("streamable-http", host="127.0.0.1", port=args.port,
                                         json_response=True, stateless_http=True)


if __name__ == "__main__":
    main()
