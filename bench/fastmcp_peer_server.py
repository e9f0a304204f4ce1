"""The FastMCP peer: the same tool on FastMCP 4.x's own HTTP server (``FastMCP.run(transport="http")``).

Run ONLY by FastMCP's virtual environment (``.cache/bench-fastmcp-venv/bin/python
bench/fastmcp_peer_server.py --port N --upstream URL --token T``); the project never imports it.
Stateless HTTP with JSON responses, one tool ``get_me`` making the same aiohttp call to the upstream
simulator as the other peers (``peer_upstream``). FastMCP's defaults otherwise (uvicorn as it starts
it, log level INFO with uvicorn's access line per request); only the start-up banner is off.
"""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP  # from this script's own environment
from peer_upstream import Me, peer_arguments  # beside this script


def build(upstream_url: str, token: str) -> FastMCP:
    server = FastMCP(name="figma-peer", version="1.0.0")
    me = Me(upstream_url, token)

    @server.tool(name="get_me", description="The Figma user this token belongs to (id, handle, email).")
    async def get_me() -> dict[str, Any]:
        return await me.get()

    return server


def main() -> None:
    args = peer_arguments(__doc__.splitlines()[0])
    build(args.upstream, args.token).run(transport="http", host="127.0.0.1", port=args.port, path="/mcp",
                                         stateless_http=True, json_response=True, show_banner=False)


if __name__ == "__main__":
    main()
