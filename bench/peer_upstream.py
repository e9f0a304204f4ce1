"""The peers' upstream call: ``GET /v1/me`` with aiohttp, with the platform's session settings.

Imported by the Python peer servers, which run from their own environments as scripts (this folder is
their ``sys.path[0]``), so it needs aiohttp alone: the settings of ``mcp.server.upstream.make_session``
are copied here because the project's ``mcp`` package is not importable there.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import aiohttp

USER_AGENT = "mcp-platform/0.1 (+https://github.com/)"


class Me:
    """One token's ``GET /v1/me``, on a session made on first use (inside the server's event loop)."""

    def __init__(self, upstream_url: str, token: str) -> None:
        self.url = f"{upstream_url.rstrip('/')}/v1/me"
        self.headers = {"X-Figma-Token": token}
        self.session: aiohttp.ClientSession | None = None

    async def get(self) -> dict[str, Any]:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30.0, connect=10.0),
                connector=aiohttp.TCPConnector(limit=200, ttl_dns_cache=300),
                headers={"User-Agent": USER_AGENT},
                trust_env=False,
            )
        async with self.session.request("GET", self.url, headers=self.headers, params=None, json=None) as resp:
            body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"upstream answered {resp.status}")
        result: dict[str, Any] = json.loads(body)
        return result


def peer_arguments(description: str) -> argparse.Namespace:
    """The command line every Python peer takes: its port, the upstream's URL and the token it calls with."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--token", default="figd_bench_peer")
    return parser.parse_args()
