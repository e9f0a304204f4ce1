"""The MCP protocol on one instance's endpoint: eras, version rules, header rules, the methods we serve.

Two protocol eras share the endpoint, and each POST is served on its own (no session, no memory of
earlier requests), so any process of a service can answer any request:

- **modern** (2026-07-28): a request declares its version in ``params._meta`` and mirrors it, with
  the method and tool name, in the ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name``
  headers. Methods: ``server/discover``, ``tools/list``, ``tools/call``. Results carry
  ``resultType``; list and discover results carry ``ttlMs`` and ``cacheScope``.
- **legacy** (2025-11-25, 2025-06-18, 2025-03-26): a client opens with ``initialize`` (we echo a
  version we speak, else offer our newest) and then sends the negotiated version in the
  ``MCP-Protocol-Version`` header; no header means 2025-03-26. Methods: ``initialize``, ``ping``,
  ``tools/list``, ``tools/call``; notifications and client responses are accepted with 202.
  Only 2025-03-26 allows JSON-RPC batches.

A request is modern when its ``MCP-Protocol-Version`` header names a modern version; a request whose
``_meta`` declares a protocol version the header does not carry (or that has no header) is refused
as a header mismatch (-32020); every other request is legacy. A header naming no version we speak
is refused (-32022) before either era looks at the body.

Everything here is a function of the service's tool registry, an instance-bound way to call a tool,
and the request (headers and body); the Tornado handler in ``mcp.server.mcp_handler`` only moves bytes.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple

from mcp.errors import (
    BadRequest,
    Forbidden,
    HeaderMismatch,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    NotFound,
    ParseError,
    RpcError,
    UnsupportedProtocolVersion,
)
from mcp.protocol.jsonrpc import (
    Notification,
    Request,
    Response,
    classify,
    decode,
    error_response,
    request_id,
    result_response,
)
from mcp.protocol.tools import Tool, ToolRegistry, ToolView

log = logging.getLogger(__name__)

MODERN_VERSIONS = ("2026-07-28",)
LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")  # newest first: [0] is our offer
SUPPORTED_VERSIONS = (*MODERN_VERSIONS, *LEGACY_VERSIONS)
# What a legacy request without MCP-Protocol-Version speaks (the 2025-06-18+ transport rule).
HEADERLESS_VERSION = "2025-03-26"
# The only revision whose transport allows JSON-RPC batches (2025-06-18 removed them).
BATCH_VERSIONS = ("2025-03-26",)
# One POST is one rate-limited request; a batch may not turn it into an unbounded number of calls.
MAX_BATCH = 32

VERSION_HEADER = "mcp-protocol-version"
METHOD_HEADER = "mcp-method"
NAME_HEADER = "mcp-name"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
# Methods whose Mcp-Name header mirrors a params field (2026-07-28 "Standard Request Headers").
NAME_PARAMS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
# How long a modern client may reuse tools/list and server/discover answers. "private": the answer
# is addressed by an instance URL, which is a bearer capability, so no shared cache may reuse it.
LIST_TTL_MS = 60_000
CACHE_SCOPE = "private"
CURSOR_PREFIX = "tools:"

ToolInvoker = Callable[[Tool, Any], Awaitable[dict[str, Any]]]
Headers = Mapping[str, Sequence[str]]


class McpServer(NamedTuple):
    """What one request is served with: the instance's tools and a tool call bound to the instance.

    ``registry`` is the service's registry, or the view of it the instance's tool policy allows
    (``ToolRegistry.allowing``): tools/list and tools/call see only what it holds.
    ``invoke(tool, arguments)`` validates the arguments, runs the tool and records usage (see
    ``mcp.server.endpoints.call_tool``); ``server_info`` is the MCP Implementation object we present.
    """

    registry: ToolRegistry | ToolView
    invoke: ToolInvoker
    server_info: dict[str, Any]
    page_size: int = 100


class Reply(NamedTuple):
    """The HTTP answer to one POST: a status and a JSON body (None: no body, as with 202)."""

    status: int
    body: Any = None


def _header(headers: Headers, name: str) -> str | None:
    """One header's value (None if absent); HeaderMismatch if it was sent more than once."""
    values = headers.get(name) or ()
    if len(values) > 1:
        # A router reading the first copy and a server reading the last would disagree.
        raise HeaderMismatch(f"the {name} header was sent more than once")
    return values[0] if values else None


def _body_version(payload: Any) -> Any:
    """The protocol version a single message declares in params._meta, or None."""
    if isinstance(payload, dict) and isinstance(payload.get("params"), dict):
        meta = payload["params"].get("_meta")
        if isinstance(meta, dict):
            return meta.get(META_VERSION)
    return None


def handle_post(server: McpServer, headers: Headers, raw: bytes) -> Reply | Awaitable[Reply]:
    """Answer one POST to the MCP endpoint. ``headers``: lower-case names to every value sent.

    The Reply itself when nothing waits (every method but a tool call, every refusal), else the one
    awaitable that gives it: each coroutine level between the handler and the tool costs every call.
    """
    try:
        payload = decode(raw)
    except ParseError as e:
        return Reply(e.status(modern=True), error_response(None, e))
    try:
        version = _header(headers, VERSION_HEADER)
        if version is not None and version not in SUPPORTED_VERSIONS:
            raise UnsupportedProtocolVersion(version, list(SUPPORTED_VERSIONS))
        if isinstance(payload, list):
            return _batch(server, version or HEADERLESS_VERSION, payload)
    except RpcError as e:
        # Nothing era-specific has happened yet; these errors are 400 in both eras.
        return Reply(e.status(modern=True), error_response(request_id(payload), e))
    declared = _body_version(payload)
    if version in MODERN_VERSIONS or (declared is not None and declared != version):
        # The second case can only end in HeaderMismatch: the body and the header disagree.
        return _modern(server, headers, payload)
    return _legacy(server, payload)


# --- legacy era ------------------------------------------------------------------------------


def _legacy(server: McpServer, payload: Any) -> Reply | Awaitable[Reply]:
    """One legacy message: requests are answered (errors in-band), the rest is accepted."""
    try:
        message = classify(payload)
    except RpcError as e:
        # A message we cannot accept is an HTTP error in both eras (the 200-with-error of the
        # legacy era is for requests we understood).
        return Reply(e.status(modern=True), error_response(request_id(payload), e))
    if not isinstance(message, Request):
        return Reply(202)  # notifications (initialized, cancelled, ...) and client responses
    return _answer(server, message, modern=False)


def _batch(server: McpServer, version: str, items: list[Any]) -> Awaitable[Reply]:
    """A 2025-03-26 batch: one answer per request, in order; 202 if it held no request. Raises InvalidRequest
    for a batch this version does not allow, or that is empty or too long."""
    if version not in BATCH_VERSIONS:
        raise InvalidRequest(f"MCP {version} does not allow JSON-RPC batches; send one message per POST")
    if not items:
        raise InvalidRequest("the batch is empty")
    if len(items) > MAX_BATCH:
        raise InvalidRequest(f"a batch may hold at most {MAX_BATCH} messages")
    return _batch_answers(server, items)


async def _batch_answers(server: McpServer, items: list[Any]) -> Reply:
    answers: list[dict[str, Any]] = []
    for item in items:
        try:
            message = classify(item)
            if isinstance(message, Request) and message.method == "initialize":
                raise InvalidRequest("initialize must not be part of a batch")
        except RpcError as e:
            answers.append(error_response(request_id(item), e))
            continue
        if isinstance(message, Request):
            reply = _answer(server, message, modern=False)
            if not isinstance(reply, Reply):
                reply = await reply
            answers.append(reply.body)
    return Reply(200, answers) if answers else Reply(202)


def _initialize(server: McpServer, params: dict[str, Any]) -> dict[str, Any]:
    """The legacy handshake: echo the client's version if we speak it, else offer our newest."""
    requested = params.get("protocolVersion")
    if not isinstance(requested, str):
        raise InvalidParams("initialize needs params.protocolVersion, a string")
    return {
        "protocolVersion": requested if requested in LEGACY_VERSIONS else LEGACY_VERSIONS[0],
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": server.server_info,
    }


# --- modern era ------------------------------------------------------------------------------


def _modern(server: McpServer, headers: Headers, payload: Any) -> Reply | Awaitable[Reply]:
    """One 2026-07-28 message: a request passing the envelope rules is answered; notifications get 202."""
    try:
        message = classify(payload)
        if isinstance(message, Notification):
            return Reply(202)
        if isinstance(message, Response):
            raise InvalidRequest("in MCP 2026-07-28 clients do not send JSON-RPC responses")
        _check_envelope(message, headers)
    except RpcError as e:
        return Reply(e.status(modern=True), error_response(request_id(payload), e))
    return _answer(server, message, modern=True)


def _decode_header_value(value: str, name: str) -> str:
    """A mirrored header value as the body would carry it (the =?base64?...?= form decoded)."""
    if any(not (0x20 <= ord(c) <= 0x7E or c == "\t") for c in value):
        raise HeaderMismatch(f"the {name} header has characters a header may not carry")
    if value.startswith("=?base64?") and value.endswith("?="):
        try:
            return base64.b64decode(value[len("=?base64?"):-2], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise HeaderMismatch(f"the {name} header's base64 value does not decode") from None
    return value


def _check_envelope(request: Request, headers: Headers) -> None:
    """The per-request rules of 2026-07-28: required _meta, then headers that match the body.

    Raises InvalidParams (-32602) for missing _meta fields and HeaderMismatch (-32020) for a
    missing, repeated or different header.
    """
    meta = request.params.get("_meta")
    if not isinstance(meta, dict):
        raise InvalidParams(f"params._meta is required and must carry {META_VERSION!r} and {META_CAPABILITIES!r}")
    missing = [key for key in (META_VERSION, META_CAPABILITIES) if key not in meta]
    if missing:
        raise InvalidParams(f"params._meta is missing {', '.join(repr(k) for k in missing)}")
    if not isinstance(meta[META_CAPABILITIES], dict):
        raise InvalidParams(f"params._meta[{META_CAPABILITIES!r}] must be an object")
    header = _header(headers, VERSION_HEADER)
    if header is None:
        raise HeaderMismatch("the MCP-Protocol-Version header is required and must match params._meta")
    if header != meta[META_VERSION]:
        raise HeaderMismatch(f"MCP-Protocol-Version header {header!r} does not match the body's protocol "
                             f"version {meta[META_VERSION]!r}")
    method = _header(headers, METHOD_HEADER)
    if method != request.method:
        raise HeaderMismatch(f"Mcp-Method header {method!r} does not match the body's method {request.method!r}")
    key = NAME_PARAMS.get(request.method)
    if key is not None and isinstance(request.params.get(key), str):
        raw = _header(headers, NAME_HEADER)
        if raw is None:
            raise HeaderMismatch(f"the Mcp-Name header is required for {request.method}")
        name = _decode_header_value(raw, "Mcp-Name")
        if name != request.params[key]:
            raise HeaderMismatch(f"Mcp-Name header {name!r} does not match the body's {key} "
                                 f"{request.params[key]!r}")


def _modern_result(server: McpServer, result: dict[str, Any]) -> dict[str, Any]:
    """A result as 2026-07-28 wants it: resultType, and the server named in _meta."""
    meta = {**(result.get("_meta") or {}), META_SERVER_INFO: server.server_info}
    return {**result, "resultType": "complete", "_meta": meta}


def _discover() -> dict[str, Any]:
    """server/discover: every version we speak (legacy ones through initialize) and our capabilities."""
    return {"supportedVersions": list(SUPPORTED_VERSIONS), "capabilities": {"tools": {}},
            "ttlMs": LIST_TTL_MS, "cacheScope": CACHE_SCOPE}


# --- both eras -------------------------------------------------------------------------------


def _answer(server: McpServer, request: Request, *, modern: bool) -> Reply | Awaitable[Reply]:
    """Run one request; its errors become JSON-RPC error answers with the era's HTTP status. The Reply, or for
    a tool call the awaitable that gives it."""
    try:
        result = _dispatch(server, request, modern=modern)
    except Exception as e:
        return _failed(request, e, modern)
    if not isinstance(result, dict):
        return _answer_call(server, request, result, modern)  # tools/call: the only method that waits
    return _answered(server, request, result, modern)


async def _answer_call(server: McpServer, request: Request, call: Awaitable[dict[str, Any]], modern: bool) -> Reply:
    try:
        result = await call
    except Exception as e:
        return _failed(request, e, modern)
    return _answered(server, request, result, modern)


def _answered(server: McpServer, request: Request, result: dict[str, Any], modern: bool) -> Reply:
    if modern:
        result = _modern_result(server, result)
    return Reply(200, result_response(request.id, result))


def _failed(request: Request, error: Exception, modern: bool) -> Reply:
    """A request's error as its JSON-RPC error answer; anything but an RpcError is logged and said to be internal."""
    if not isinstance(error, RpcError):
        log.error("MCP method %s failed unexpectedly", request.method, exc_info=error)
        error = RpcError(f"{request.method} failed because of an internal error; it has been logged")
    return Reply(error.status(modern=modern), error_response(request.id, error))


def _dispatch(server: McpServer, request: Request, *,
              modern: bool) -> dict[str, Any] | Awaitable[dict[str, Any]]:
    """The result of one request in its era's method table (for tools/call, the call to await);
    MethodNotFound outside it. Not a coroutine itself: each level of awaiting costs every call."""
    method, params = request.method, request.params
    if method == "tools/call":
        return _tools_call(server, params)
    if method == "tools/list":
        page = _tools_page(server, params)
        return {**page, "ttlMs": LIST_TTL_MS, "cacheScope": CACHE_SCOPE} if modern else page
    if modern:
        if method == "server/discover":
            return _discover()
        if method == "initialize":
            raise MethodNotFound(f"initialize is not part of MCP {MODERN_VERSIONS[-1]}; this server speaks "
                                 f"{', '.join(SUPPORTED_VERSIONS)} (legacy versions through initialize "
                                 "without the 2026 headers)")
    else:
        if method == "initialize":
            return _initialize(server, params)
        if method == "ping":
            return {}
    raise MethodNotFound(f"unknown method {method!r}")


def _encode_cursor(offset: int) -> str:
    # Self-contained, so any process can continue a listing another process started.
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{offset}".encode()).decode()


def _decode_cursor(cursor: Any, total: int) -> int:
    """The offset a cursor we issued points at; InvalidParams for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode() if isinstance(cursor, str) else ""
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    offset = text[len(CURSOR_PREFIX):] if text.startswith(CURSOR_PREFIX) else ""
    if not offset.isdigit() or not 0 < int(offset) < total:
        raise InvalidParams("invalid cursor: pass the nextCursor of a previous tools/list answer, or none")
    return int(offset)


def _tools_page(server: McpServer, params: dict[str, Any]) -> dict[str, Any]:
    """One tools/list page; nextCursor while more remain."""
    tools = server.registry.describe()
    cursor = params.get("cursor")
    start = 0 if cursor is None else _decode_cursor(cursor, len(tools))
    end = start + server.page_size
    page: dict[str, Any] = {"tools": tools[start:end]}
    if end < len(tools):
        page["nextCursor"] = _encode_cursor(end)
    return page


def _tools_call(server: McpServer, params: dict[str, Any]) -> Awaitable[dict[str, Any]]:
    """Unknown or disallowed tools and malformed params are protocol errors (raised now); everything else
    is a CallToolResult (the returned call, to await)."""
    try:
        tool = server.registry.get(params.get("name"))
    except (BadRequest, NotFound) as e:
        raise InvalidParams(e.message) from None
    except Forbidden as e:  # a tool the instance's policy does not allow: say so, machine-readably too
        raise InvalidParams(e.message, data={"code": e.code}) from None
    arguments = params.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        raise InvalidParams("params.arguments must be an object")
    return server.invoke(tool, arguments)
