"""The peer: the same tool on the official MCP Python SDK's own Streamable HTTP server.

Run ONLY by the SDK's virtual environment (``.cache/bench-sdk-venv/bin/python bench/sdk_peer_server.py
--port N --upstream URL --token T``); the project never imports it, nor the SDK. Stateless, JSON
responses, one tool ``get_me`` making the same aiohttp call to the upstream simulator with the same
session settings as the platform (``mcp.upstream.make_session``, copied here because the project's
``mcp`` package is not importable from this environment). Server defaults otherwise (uvicorn as the
SDK starts it, its log level INFO, so one access line per request, as the platform writes).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import aiohttp
from mcp.server.mcpserver import MCPServer  # the SDK, from this script's own environment

USER_AGENT = "mcp-platform/0.1 (+https://github.com/)"


def build(upstream_url: str, token: str) -> MCPServer:
    server = MCPServer(name="figma-peer", version="1.0.0")
    state: dict[str, aiohttp.ClientSession] = {}
    headers = {"X-Figma-Token": token}
    url = f"{upstream_url.rstrip('/')}/v1/me"

    @server.tool(name="get_me", description="The Figma user this token belongs to (id, handle, email).")
    async def get_me() -> dict[str, Any]:
        session = state.get("session")
        if session is None:
            session = state["session"] = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30.0, connect=10.0),
                connector=aiohttp.TCPConnector(limit=200, ttl_dns_cache=300),
                headers={"User-Agent": USER_AGENT},
                trust_env=False,
            )
        async with session.request("GET", url, headers=headers, params=None, json=None) as resp:
            body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"upstream answered {resp.status}")
        return json.loads(body)

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--token", default="figd_bench_peer")
    args = parser.parse_args()
    build(args.upstream, args.token).run("streamable-http", host="127.0.0.1", port=args.port,
                                         json_response=True, stateless_http=True)


if __name__ == "__main__":
    main()
