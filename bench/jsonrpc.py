"""MCP over Streamable HTTP from the client side: initialize, detect, build the tools/call request.

Used for both the platform's ``POST /{instance}/mcp`` (measured only when it answers a ``tools/call``)
and the SDK peer's ``POST /mcp``. A server that hands out ``Mcp-Session-Id`` gets one session per
URL, and the load carries each URL's session id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bench.procs import HttpAnswer, http

PROTOCOL_VERSION = "2025-11-25"
BASE_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
TOOL_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_me", "arguments": {}}}


class NotAvailable(Exception):
    """The endpoint does not (yet) answer MCP; the message says what it answered instead."""


@dataclass(frozen=True)
class Session:
    protocol_version: str
    session_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def message(answer: HttpAnswer) -> Any:
    """The JSON-RPC message in an answer, whether sent as JSON or as one SSE event."""
    text = answer.body.decode("utf-8", "replace")
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        text = data[-1] if data else ""
    return json.loads(text)


def initialize(url: str) -> Session:
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "mcp-bench", "version": "1"}}}
    try:
        answer = http("POST", url, body, headers=BASE_HEADERS)
    except OSError as e:
        raise NotAvailable(f"{type(e).__name__}: {e}") from None
    if answer.status != 200:
        raise NotAvailable(f"initialize answered HTTP {answer.status}")
    try:
        reply = message(answer)
    except ValueError:
        raise NotAvailable("initialize did not answer JSON-RPC") from None
    if not isinstance(reply, dict) or "result" not in reply:
        raise NotAvailable(f"initialize answered {str(reply)[:200]}")
    version = str(reply["result"].get("protocolVersion") or PROTOCOL_VERSION)
    session_id = answer.headers.get("mcp-session-id")
    headers = {"MCP-Protocol-Version": version}
    if session_id:
        headers["Mcp-Session-Id"] = session_id
        http("POST", url, {"jsonrpc": "2.0", "method": "notifications/initialized"},
             headers={**BASE_HEADERS, **headers})
    return Session(version, session_id, headers)


def call_tool(url: str, session: Session) -> dict[str, Any]:
    """One tools/call; NotAvailable unless it comes back as a successful tool result."""
    answer = http("POST", url, TOOL_CALL, headers={**BASE_HEADERS, **session.headers})
    if answer.status != 200:
        raise NotAvailable(f"tools/call answered HTTP {answer.status}")
    reply = message(answer)
    result = reply.get("result") if isinstance(reply, dict) else None
    if not isinstance(result, dict) or result.get("isError", False) is not False:  # MCP: absent means false
        raise NotAvailable(f"tools/call answered {str(reply)[:200]}")
    return result
