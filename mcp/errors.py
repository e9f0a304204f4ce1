"""Errors the platform reports to clients, and errors tools report as results.

The tree::

    PlatformError                 answered as an HTTP status + JSON body (or a JSON-RPC error)
    ├── BadRequest          400   malformed JSON, missing/invalid field, bad instance id
    ├── Unauthorized        401   missing or wrong admin token
    ├── Forbidden           403   instance inactive or expired, origin not allowed
    ├── NotFound            404   unknown route, instance, tool or resource
    ├── MethodNotAllowed    405
    ├── Conflict            409
    ├── PayloadTooLarge     413
    ├── TooManyRequests     429   carries retry_after
    ├── UpstreamFailed      502   a direct endpoint's upstream call failed (body says how)
    └── Unavailable         503   database or dependency down; carries retry_after

    ToolError                     becomes a CallToolResult with isError: true, never an HTTP error
    └── UpstreamError             {upstream, status, code, message, retry_after_s}

HTTP statuses and JSON-RPC codes are chosen here and nowhere else. Messages are written for a
person and must never contain a secret, a credential or a stack trace.
"""

from __future__ import annotations

from typing import Any

JSONRPC_PARSE_ERROR = -32700
JSONRPC_INVALID_REQUEST = -32600
JSONRPC_METHOD_NOT_FOUND = -32601
JSONRPC_INVALID_PARAMS = -32602
JSONRPC_INTERNAL_ERROR = -32603
# Implementation-defined server errors (-32000..-32099) for conditions JSON-RPC does not name.
JSONRPC_SERVER_ERROR = -32000


class PlatformError(Exception):
    """An error answered to the client with an HTTP status and a JSON body."""

    status = 500
    code = "internal_error"
    jsonrpc_code = JSONRPC_INTERNAL_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        retry_after: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field
        self.retry_after = retry_after
        self.details = details

    def body(self) -> dict[str, Any]:
        """The JSON error body: {"error": {"code", "message", ...}}."""
        err: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.field is not None:
            err["field"] = self.field
        if self.retry_after is not None:
            err["retry_after_s"] = self.retry_after
        if self.details:
            err.update(self.details)
        return {"error": err}

    def headers(self) -> dict[str, str]:
        if self.retry_after is not None:
            return {"Retry-After": str(self.retry_after)}
        return {}


class BadRequest(PlatformError):
    status = 400
    code = "bad_request"
    jsonrpc_code = JSONRPC_INVALID_PARAMS


class Unauthorized(PlatformError):
    status = 401
    code = "unauthorized"
    jsonrpc_code = JSONRPC_SERVER_ERROR

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="mcp-platform"'}


class Forbidden(PlatformError):
    status = 403
    code = "forbidden"
    jsonrpc_code = JSONRPC_SERVER_ERROR


class NotFound(PlatformError):
    status = 404
    code = "not_found"
    jsonrpc_code = JSONRPC_SERVER_ERROR


class MethodNotAllowed(PlatformError):
    status = 405
    code = "method_not_allowed"
    jsonrpc_code = JSONRPC_SERVER_ERROR


class Conflict(PlatformError):
    status = 409
    code = "conflict"
    jsonrpc_code = JSONRPC_SERVER_ERROR


class PayloadTooLarge(PlatformError):
    status = 413
    code = "payload_too_large"
    jsonrpc_code = JSONRPC_INVALID_REQUEST


class TooManyRequests(PlatformError):
    status = 429
    code = "rate_limited"
    jsonrpc_code = JSONRPC_SERVER_ERROR


class UpstreamFailed(PlatformError):
    status = 502
    code = "upstream_error"
    jsonrpc_code = JSONRPC_SERVER_ERROR


class Unavailable(PlatformError):
    status = 503
    code = "unavailable"
    jsonrpc_code = JSONRPC_SERVER_ERROR


class ToolError(Exception):
    """Raised by a tool handler; the caller sees a CallToolResult with isError: true."""

    def __init__(self, message: str, *, code: str = "tool_error", details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details or {}

    def structured(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class UpstreamError(ToolError):
    """An upstream API (Figma, GitHub, Slack) refused or failed a call."""

    def __init__(
        self,
        upstream: str,
        message: str,
        *,
        status: int | None = None,
        code: str = "upstream_error",
        retry_after_s: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.upstream = upstream
        self.status = status
        self.retry_after_s = retry_after_s

    def structured(self) -> dict[str, Any]:
        return {
            "upstream": self.upstream,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "retry_after_s": self.retry_after_s,
            **self.details,
        }

    def as_http_error(self) -> PlatformError:
        """How a direct endpoint answers this failure: 404 and 429 pass through, the rest is 502."""
        body = self.structured()
        if self.status == 404:
            return NotFound(self.message, code="upstream_not_found", details={"upstream": body})
        if self.status == 429 or self.code == "rate_limited":
            return TooManyRequests(
                self.message, retry_after=self.retry_after_s, details={"upstream": body}
            )
        return UpstreamFailed(self.message, code=f"upstream_{self.code}", details={"upstream": body})
