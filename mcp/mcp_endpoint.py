"""POST /{instance}/mcp: the MCP Streamable HTTP endpoint that real MCP clients connect to.

The handler is thin. Before the instance is looked up it refuses what no MCP request may be: a
Host or Origin off the allow-list (421 / 403, the DNS-rebinding defence), any method but POST (405:
there is no server-initiated stream to GET and no session to DELETE), an Accept without JSON (406),
a body not sent as JSON (415). Then ``InstanceHandler.prepare`` resolves the instance as for every
endpoint, and ``mcp.protocol`` answers the JSON-RPC. Every error, including instance resolution's,
is a JSON-RPC error body with the HTTP status chosen in ``mcp.errors``.

Sessions: none. No ``Mcp-Session-Id`` is issued (one sent is ignored), so any process of a service
can serve any request and copies can sit behind one nginx upstream; 2026-07-28 removed sessions
altogether, and legacy clients carry their negotiated version in ``MCP-Protocol-Version``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Iterator, Mapping
from typing import Any

import tornado.web
from tornado.httputil import HTTPHeaders

from mcp.errors import (
    JSONRPC_INVALID_REQUEST,
    Forbidden,
    MethodNotAllowed,
    MisdirectedRequest,
    NotAcceptable,
    PayloadTooLarge,
    PlatformError,
    UnsupportedMediaType,
)
from mcp.handlers import InstanceHandler, call_tool
from mcp.protocol import McpServer, handle_post
from mcp.web import dumps

_JSON = "application/json"


class _HeaderLists(Mapping[str, list[str]]):
    """Tornado's request headers as ``mcp.protocol`` reads them: a name's every value, on demand."""

    def __init__(self, headers: HTTPHeaders) -> None:
        self._headers = headers

    def __getitem__(self, name: str) -> list[str]:
        values = self._headers.get_list(name)
        if not values:
            raise KeyError(name)
        return values

    def get(self, name: str, default: Any = None) -> Any:  # the only read mcp.protocol makes
        return self._headers.get_list(name) or default

    def __iter__(self) -> Iterator[str]:
        return (name.lower() for name in self._headers)

    def __len__(self) -> int:
        return len(self._headers)


def _media_types(header: str) -> list[str]:
    """The media ranges of an Accept header a client will take (q=0 means it will not)."""
    kept = []
    for part in header.split(","):
        fields = [f.strip().lower() for f in part.split(";")]
        if any(f.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for f in fields[1:]):
            continue
        if fields[0]:
            kept.append(fields[0])
    return kept


@functools.lru_cache(maxsize=64)  # a pure function of a header that takes few distinct values
def accepts_json(accept: str | None) -> bool:
    """Whether a client with this Accept header takes our JSON answers (no header: anything)."""
    if accept is None:
        return True
    return any(t in (_JSON, "application/*", "*/*") for t in _media_types(accept))


@functools.lru_cache(maxsize=64)
def is_json(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == _JSON


class McpHandler(InstanceHandler):
    """The MCP endpoint of one instance: JSON-RPC over POST, answered as one JSON object."""

    def prepare(self) -> Awaitable[None] | None:
        headers = self.request.headers
        policy = self.runtime.settings.origin_policy
        # Host and Origin first: a rebinding page learns nothing, not even whether the id exists.
        if not policy.host_allowed(self.request.host):
            raise MisdirectedRequest("this server does not answer MCP requests for this Host; "
                                     "an operator can add it to ALLOWED_HOSTS")
        if not policy.origin_allowed(headers.get("Origin")):
            raise Forbidden("requests from this Origin are not allowed; an operator can add it to ALLOWED_ORIGINS",
                            code="origin_not_allowed")
        if self.request.method != "POST":
            raise MethodNotAllowed("the MCP endpoint takes POST only: it offers no server-initiated stream (GET) "
                                   "and no sessions to end (DELETE)")
        if not accepts_json(headers.get("Accept")):
            raise NotAcceptable("this endpoint answers with application/json; "
                                "send Accept: application/json, text/event-stream")
        if not is_json(headers.get("Content-Type")):
            raise UnsupportedMediaType("send the JSON-RPC message with Content-Type: application/json")
        return super().prepare()

    async def post(self, instance: str) -> None:
        self.body_read()
        if self._too_large:
            raise PayloadTooLarge(f"the request body is larger than {self._max_body} bytes")
        rt = self.runtime
        server = McpServer(rt.registry, functools.partial(call_tool, rt, self.instance), rt.server_info,
                           rt.settings.mcp_page_size)
        reply = await handle_post(server, _HeaderLists(self.request.headers), bytes(self._body))
        self.set_status(reply.status)
        if reply.body is None:
            self.clear_header("Content-Type")
            self.finish()
        else:
            self.finish(dumps(reply.body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors before or outside the JSON-RPC exchange, as a JSON-RPC error with ``id: null``."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, PlatformError):
            err = exc
        elif isinstance(exc, tornado.web.HTTPError) and status_code < 500:
            err = PlatformError(self._reason or "the request was refused", code="http_error")
            err.status, err.jsonrpc_code = status_code, JSONRPC_INVALID_REQUEST
        else:
            err = PlatformError("internal server error; it has been logged")
        data = {k: v for k, v in err.body()["error"].items() if k != "message"}
        if err.status == 405:
            self.set_header("Allow", "POST")
        self.send_error_body(err, dumps({"jsonrpc": "2.0", "id": None,
                                         "error": {"code": err.jsonrpc_code, "message": err.message, "data": data}}))
