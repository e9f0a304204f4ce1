"""JSON-RPC 2.0 as MCP uses it: decoding a body, telling messages apart, shaping responses.

Knows nothing of MCP methods or HTTP; ``mcp.protocol.methods`` builds on it. Errors are raised as the
``RpcError`` subclasses of ``mcp.errors``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mcp.errors import InvalidParams, InvalidRequest, ParseError, RpcError
from mcp.protocol.jsonparse import JsonInputError, parse_json

RequestId = str | int


class Request(NamedTuple):
    """A message that wants an answer."""

    id: RequestId
    method: str
    params: dict[str, Any]


class Notification(NamedTuple):
    """A message that gets no answer."""

    method: str
    params: dict[str, Any]


class Response(NamedTuple):
    """A client's answer to a server request (a result or an error)."""

    id: RequestId | None


Message = Request | Notification | Response


def decode(raw: bytes) -> Any:
    """The body as a JSON value; ParseError saying why it is not one (the same rules as REST bodies)."""
    try:
        return parse_json(raw)
    except JsonInputError as e:
        raise ParseError(f"the body is not valid JSON: {e}") from None


def _valid_id(value: Any) -> bool:
    # MCP forbids null ids; JSON-RPC advises against fractions; a bool is not a number here.
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def request_id(value: Any) -> RequestId | None:
    """The id of a raw message when it is usable for an error answer, else None."""
    if isinstance(value, dict) and _valid_id(value.get("id")):
        return value["id"]
    return None


def classify(value: Any) -> Message:
    """One decoded JSON-RPC message as a Request, Notification or Response.

    Raises InvalidRequest for anything that is not a JSON-RPC 2.0 message, and InvalidParams when
    ``params`` is present but not an object (MCP params are always objects).
    """
    if not isinstance(value, dict):
        raise InvalidRequest("a JSON-RPC message must be a JSON object")
    if value.get("jsonrpc") != "2.0":
        raise InvalidRequest('a JSON-RPC message must have "jsonrpc": "2.0"')
    if "method" in value:
        method = value["method"]
        if not isinstance(method, str) or not method:
            raise InvalidRequest('"method" must be a non-empty string')
        params = value.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise InvalidParams('"params" must be an object')
        if "id" not in value:
            return Notification(method, params)
        if not _valid_id(value["id"]):
            raise InvalidRequest('"id" must be a string or an integer (never null)')
        return Request(value["id"], method, params)
    if "id" in value and ("result" in value) != ("error" in value):
        if value["id"] is not None and not _valid_id(value["id"]):
            raise InvalidRequest('"id" must be a string or an integer')
        return Response(value["id"])
    raise InvalidRequest('a JSON-RPC message needs a "method" (request or notification) or a "result"/"error"')


def result_response(rid: RequestId, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def error_response(rid: RequestId | None, error: RpcError) -> dict[str, Any]:
    """An error answer; ``id`` is null when the request's id could not be read."""
    return {"jsonrpc": "2.0", "id": rid, "error": error.error_object()}
