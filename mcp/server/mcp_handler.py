"""POST /{instance}/mcp: the MCP Streamable HTTP endpoint that real MCP clients connect to.

The handler is thin. Before the instance is looked up it refuses what no MCP request may be: a
Host or Origin off the allow-list (421 / 403, the DNS-rebinding defence), any method but POST (405:
there is no server-initiated stream to GET and no session to DELETE), an Accept without JSON (406),
a body not sent as JSON (415). Then ``InstanceHandler.prepare`` resolves the instance as for every
endpoint, and ``mcp.protocol.methods`` answers the JSON-RPC. Every error, including instance resolution's,
is a JSON-RPC error body with the HTTP status chosen in ``mcp.errors``.

Sessions: none. No ``Mcp-Session-Id`` is issued (one sent is ignored), so any process of a service
can serve any request and copies can sit behind one nginx upstream; 2026-07-28 removed sessions
altogether, and legacy clients carry their negotiated version in ``MCP-Protocol-Version``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from tornado.httputil import HTTPHeaders

from mcp.errors import (
    MethodNotAllowed,
    NotAcceptable,
    RateLimited,
    UnsupportedMediaType,
    client_error,
)
from mcp.protocol.media import accepts_json, is_json
from mcp.protocol.methods import McpServer, Reply, handle_post
from mcp.protocol.tools import Tool
from mcp.server.base import dumps
from mcp.server.endpoints import InstanceHandler, call_tool


class _HeaderLists(Mapping[str, list[str]]):
    """Tornado's request headers as ``mcp.protocol.methods`` reads them: a name's every value, on demand."""

    def __init__(self, headers: HTTPHeaders) -> None:
        self._headers = headers

    def __getitem__(self, name: str) -> list[str]:
        values = self._headers.get_list(name)
        if not values:
            raise KeyError(name)
        return values

    def get(self, name: str, default: Any = None) -> Any:  # the only read mcp.protocol.methods makes
        return self._headers.get_list(name) or default

    def __iter__(self) -> Iterator[str]:
        return (name.lower() for name in self._headers)

    def __len__(self) -> int:
        return len(self._headers)


class McpHandler(InstanceHandler):
    """The MCP endpoint of one instance: JSON-RPC over POST, answered as one JSON object."""

    refreshes_token = False  # call_tool refreshes an expiring token: a failure is the call's isError result
    _calls: int  # tool calls this POST has made (a batch makes several)
    _deadline: float

    def check_browser_rules(self) -> None:
        """Host and Origin as on every instance endpoint, then what the MCP transport requires."""
        # Host and Origin first: a rebinding page learns nothing, not even whether the id exists.
        self.check_host_and_origin()
        headers = self.request.headers
        if self.request.method != "POST":
            raise MethodNotAllowed("the MCP endpoint takes POST only: it offers no server-initiated stream (GET) "
                                   "and no sessions to end (DELETE)")
        if not accepts_json(headers.get("Accept")):
            raise NotAcceptable("this endpoint answers with application/json; "
                                "send Accept: application/json, text/event-stream")
        if not is_json(headers.get("Content-Type")):
            raise UnsupportedMediaType("send the JSON-RPC message with Content-Type: application/json")

    async def post(self, instance: str) -> None:
        rt = self.runtime
        tools = rt.registry.allowing(self.instance.tool_policy)  # the registry itself unless a policy limits it
        server = McpServer(tools, self._invoker(), rt.server_info, rt.settings.mcp_page_size)
        reply = handle_post(server, _HeaderLists(self.request.headers), self.body_bytes())
        if not isinstance(reply, Reply):  # a tool call to wait for; everything else is answered at once
            reply = await reply
        self.set_status(reply.status)
        if reply.body is None:
            self.clear_header("Content-Type")
            self.finish()
        else:
            self.finish(dumps(reply.body))

    def _invoker(self) -> Callable[[Tool, Any], Awaitable[dict[str, Any]]]:
        """Tool calls for this POST: the first is paid for by the request's own rate-limit token,
        each further one (a 2025-03-26 batch) pays its own, so a batch cannot multiply the rate."""
        self._calls = 0
        self._deadline = self.deadline()
        return self._invoke

    def _invoke(self, tool: Tool, arguments: Any) -> Awaitable[dict[str, Any]]:
        self._calls += 1
        if self._calls > 1:
            wait = self.runtime.rate_limiter.acquire(self.instance.key)
            if wait:
                if wait.__class__ is int:
                    raise RateLimited(wait)  # type: ignore[arg-type]
                return self._when_admitted(wait, tool, arguments)  # type: ignore[arg-type]
        return call_tool(self.runtime, self.instance, tool, arguments, self._deadline)

    async def _when_admitted(self, admission: Awaitable[int], tool: Tool, arguments: Any) -> dict[str, Any]:
        wait = await admission  # this process had no tokens left: the shared limit's answer
        if wait:
            raise RateLimited(wait)
        return await call_tool(self.runtime, self.instance, tool, arguments, self._deadline)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors before or outside the JSON-RPC exchange, as a JSON-RPC error with ``id: null``."""
        err = client_error(kwargs.get("exc_info", (None, None, None))[1], status_code, self._reason)
        if err.status == 405:
            self.set_header("Allow", "POST")
        self.send_error_body(err, dumps({"jsonrpc": "2.0", "id": None, "error": err.rpc_error_object()}))
