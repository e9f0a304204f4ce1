"""The baseline: a bare Tornado handler making the same upstream call, with no tenancy at all.

``python -m bench.baseline --port N --upstream URL --token T``. ``POST /mcp/call`` with
``{"name", "arguments"}`` calls ``GET /v1/me`` on the upstream with the one configured token, using
the platform's own session settings (``mcp.server.upstream.make_session``) and the same aiohttp calls as
``mcp.server.upstream.UpstreamHTTP.request``, and answers the same CallToolResult shape. No instance
lookup, no decryption, no validation, no usage, no metrics, no access log: the practical ceiling
of Tornado plus aiohttp on this machine.

``POST /mcp`` does the same for a JSON-RPC ``tools/call`` and answers the JSON-RPC envelope: the
ceiling for the MCP row's exact request (its headers and body), with no MCP rules applied.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

import aiohttp
import tornado.httpserver
import tornado.web

from mcp.server.upstream import make_session


class Upstream:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"X-Figma-Token": token}
        self.session: aiohttp.ClientSession | None = None

    async def me(self) -> Any:
        if self.session is None:
            self.session = make_session(30.0)
        async with self.session.request("GET", f"{self.base_url}/v1/me", headers=self.headers, params=None,
                                        json=None) as resp:
            body = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"upstream answered {resp.status}")
        return json.loads(body)


class HealthHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish({"status": "healthy"})


class CallHandler(tornado.web.RequestHandler):
    def initialize(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def post(self) -> None:
        body = json.loads(self.request.body)
        if body.get("name") != "get_me":
            raise tornado.web.HTTPError(404)
        self.answer(await self.call_result())

    async def call_result(self) -> dict[str, Any]:
        """get_me's CallToolResult: the upstream call, as the platform shapes its answer."""
        try:
            data = await self.upstream.me()
        except (aiohttp.ClientError, RuntimeError, TimeoutError) as e:
            return {"content": [{"type": "text", "text": str(e)}], "isError": True}
        return {"content": [{"type": "text", "text": json.dumps(data, ensure_ascii=False)}],
                "structuredContent": data, "isError": False}

    def answer(self, payload: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))


class JsonRpcCallHandler(CallHandler):
    async def post(self) -> None:
        message = json.loads(self.request.body)
        params = message.get("params") or {}
        if message.get("method") != "tools/call" or params.get("name") != "get_me":
            raise tornado.web.HTTPError(404)
        self.answer({"jsonrpc": "2.0", "id": message.get("id"), "result": await self.call_result()})


async def serve(port: int, upstream_url: str, token: str) -> None:
    upstream = Upstream(upstream_url, token)
    app = tornado.web.Application([(r"/health", HealthHandler), (r"/mcp/call", CallHandler, {"upstream": upstream}),
                                   (r"/mcp", JsonRpcCallHandler, {"upstream": upstream})])
    server = tornado.httpserver.HTTPServer(app)
    server.listen(port, "127.0.0.1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    if upstream.session is not None:
        await upstream.session.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--token", default="figd_bench_baseline")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.upstream, args.token))


if __name__ == "__main__":
    main()
