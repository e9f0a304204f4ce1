"""Errors the platform reports to clients, and errors tools report as results.

The tree::

    PlatformError                 answered as an HTTP status + JSON body (or a JSON-RPC error)
    ├── BadRequest          400   malformed JSON, missing/invalid field, bad instance id
    ├── Unauthorized        401   missing or wrong admin token
    ├── Forbidden           403   instance inactive or expired, origin not allowed
    ├── NotFound            404   unknown route, instance, tool or resource
    ├── MethodNotAllowed    405
    ├── NotAcceptable       406   the client accepts no media type we answer in (MCP endpoint)
    ├── Conflict            409
    ├── PayloadTooLarge     413
    ├── UnsupportedMediaType 415  the body is not sent as JSON (MCP endpoint)
    ├── MisdirectedRequest  421   Host header not on the allow-list (MCP endpoint)
    ├── TooManyRequests     429   carries retry_after
    ├── UpstreamFailed      502   a direct endpoint's upstream call failed (body says how)
    ├── Unavailable         503   database or dependency down; carries retry_after
    └── DeadlineExceeded    504   a direct endpoint's request ran past REQUEST_TIMEOUT

    RpcError                      a JSON-RPC error answered by the MCP endpoint (status depends on the era)
    ├── ParseError        -32700  400 / 400     (modern / legacy HTTP status)
    ├── InvalidRequest    -32600  400 / 400
    ├── MethodNotFound    -32601  404 / 200
    ├── InvalidParams     -32602  400 / 200
    ├── RateLimited       -32000  429 / 200     a call in a batch beyond the instance's rate, data {retry_after_s}
    ├── HeaderMismatch    -32020  400 / 400
    └── UnsupportedProtocolVersion -32022 400 / 400, data {supported, requested}
    (the base itself is -32603, 500)

    ToolError                     becomes a CallToolResult with isError: true, never an HTTP error
    └── UpstreamError             {upstream, status, code, message, retry_after_s}

HTTP statuses and JSON-RPC codes are chosen here and nowhere else: ``client_error`` decides what a
client is told about anything that escaped a handler (our errors, the web framework's own HTTP
errors, a bug), ``PlatformError.body`` and ``PlatformError.rpc_error_object`` shape it for REST and
for the MCP endpoint. The modern era (2026-07-28)
gives every JSON-RPC error its own HTTP status; in the legacy era (2025-11-25 and before) an error
about a request that was understood (unknown method, bad params) travels in a 200 response, as
those revisions' clients expect. Messages are written for a
person and must never contain a secret, a credential or a stack trace.
"""

from __future__ import annotations

from typing import Any

JSONRPC_PARSE_ERROR = -32700
JSONRPC_INVALID_REQUEST = -32600
JSONRPC_METHOD_NOT_FOUND = -32601
JSONRPC_INVALID_PARAMS = -32602
JSONRPC_INTERNAL_ERROR = -32603
# Implementation-defined server errors (-32000..-32019) for conditions JSON-RPC does not name.
JSONRPC_SERVER_ERROR = -32000
# Codes the MCP specification defines (2026-07-28 reserves -32020..-32099 for them).
JSONRPC_HEADER_MISMATCH = -32020
JSONRPC_UNSUPPORTED_PROTOCOL_VERSION = -32022


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

    def rpc_error_object(self) -> dict[str, Any]:
        """The JSON-RPC error object for the MCP endpoint: the REST body's fields travel in ``data``."""
        data = {k: v for k, v in self.body()["error"].items() if k != "message"}
        return {"code": self.jsonrpc_code, "message": self.message, "data": data}


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


class NotAcceptable(PlatformError):
    status = 406
    code = "not_acceptable"
    jsonrpc_code = JSONRPC_INVALID_REQUEST


class Conflict(PlatformError):
    status = 409
    code = "conflict"
    jsonrpc_code = JSONRPC_SERVER_ERROR


class PayloadTooLarge(PlatformError):
    status = 413
    code = "payload_too_large"
    jsonrpc_code = JSONRPC_INVALID_REQUEST


class UnsupportedMediaType(PlatformError):
    status = 415
    code = "unsupported_media_type"
    jsonrpc_code = JSONRPC_INVALID_REQUEST


class MisdirectedRequest(PlatformError):
    status = 421
    code = "host_not_allowed"
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


class DeadlineExceeded(PlatformError):
    status = 504
    code = "deadline_exceeded"
    jsonrpc_code = JSONRPC_SERVER_ERROR


class RpcError(Exception):
    """A JSON-RPC error for an MCP client: code, message for a person, optional data.

    ``modern_status`` and ``legacy_status`` are the HTTP statuses it is answered with in each era
    (see the module docstring); inside a 2025-03-26 batch every error travels in the 200 answer.
    """

    code = JSONRPC_INTERNAL_ERROR
    modern_status = 500
    legacy_status = 500

    def __init__(self, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def status(self, *, modern: bool) -> int:
        return self.modern_status if modern else self.legacy_status

    def error_object(self) -> dict[str, Any]:
        """The JSON-RPC error object: {"code", "message", "data"?}."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


class ParseError(RpcError):
    code = JSONRPC_PARSE_ERROR
    modern_status = legacy_status = 400


class InvalidRequest(RpcError):
    code = JSONRPC_INVALID_REQUEST
    modern_status = legacy_status = 400


class MethodNotFound(RpcError):
    code = JSONRPC_METHOD_NOT_FOUND
    modern_status = 404
    legacy_status = 200


class InvalidParams(RpcError):
    code = JSONRPC_INVALID_PARAMS
    modern_status = 400
    legacy_status = 200


class RateLimited(RpcError):
    code = JSONRPC_SERVER_ERROR
    modern_status = 429
    legacy_status = 200

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"this instance is over its request rate; retry in {retry_after_s} s",
                         data={"code": "rate_limited", "retry_after_s": retry_after_s})


class HeaderMismatch(RpcError):
    code = JSONRPC_HEADER_MISMATCH
    modern_status = legacy_status = 400


class UnsupportedProtocolVersion(RpcError):
    code = JSONRPC_UNSUPPORTED_PROTOCOL_VERSION
    modern_status = legacy_status = 400

    def __init__(self, requested: Any, supported: list[str]) -> None:
        super().__init__(f"unsupported MCP protocol version {requested!r}; this server speaks "
                         f"{', '.join(supported)}", data={"supported": supported, "requested": requested})


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
        if self.code == "deadline_exceeded":
            return DeadlineExceeded(self.message, details={"upstream": body})
        if self.status == 404:
            return NotFound(self.message, code="upstream_not_found", details={"upstream": body})
        if self.status == 429 or self.code == "rate_limited":
            return TooManyRequests(
                self.message, retry_after=self.retry_after_s, details={"upstream": body}
            )
        return UpstreamFailed(self.message, code=f"upstream_{self.code}", details={"upstream": body})


def client_error(exc: BaseException | None, status: int, reason: str | None = None) -> PlatformError:
    """What a client is told about ``exc``, which ended a request with HTTP ``status``.

    Our own errors as they are; a status the web framework chose for a request it refused (``reason``
    its phrase) as the matching error; anything else as a 500 that says nothing about the cause.
    """
    if isinstance(exc, PlatformError):
        return exc
    if status >= 500:
        return PlatformError("internal server error; it has been logged")
    known = _FRAMEWORK_ERRORS.get(status)
    if known is not None:
        cls, message = known
        err = cls(message)
    else:
        err = PlatformError(reason or "the request was refused", code="http_error")
        err.status = status
    err.jsonrpc_code = JSONRPC_INVALID_REQUEST  # to an MCP client: the transport refused the request
    return err


# Statuses the web framework answers by itself (an unknown method, an unreadable request), as ours.
_FRAMEWORK_ERRORS: dict[int, tuple[type[PlatformError], str]] = {
    400: (BadRequest, "the request is malformed"),
    404: (NotFound, "no such endpoint"),
    405: (MethodNotAllowed, "this method is not allowed on this endpoint"),
    413: (PayloadTooLarge, "the request body is too large"),
}
