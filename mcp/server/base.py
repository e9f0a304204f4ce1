"""The base every HTTP handler extends: JSON in, JSON out, JSON errors, nothing leaked."""

from __future__ import annotations

import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import tornado.httputil
import tornado.iostream
import tornado.web

from mcp.errors import BadRequest, NotFound, PayloadTooLarge, PlatformError, client_error
from mcp.protocol.jsonparse import JsonInputError, parse_json
from mcp.server.accesslog import AccessLog
from mcp.server.metrics import CONTENT_TYPE, Metrics
from mcp.server.scrub import scrub_method, scrub_path

log = logging.getLogger(__name__)


def request_logger(metrics: Metrics, access: AccessLog | None = None) -> Callable[[tornado.web.RequestHandler], None]:
    """The application's log_function: an access log line and request metrics, per request."""
    access = access if access is not None else AccessLog()

    def log_request(handler: tornado.web.RequestHandler) -> None:
        # No instance ids (bearer capabilities) and no query strings (which may carry tokens).
        status = handler.get_status()
        req = handler.request
        seconds = req.request_time()
        method = scrub_method(req.method)
        access.request(status, method, scrub_path(req.path), seconds)
        metrics.request(type(handler).__name__, method, status, seconds)

    return log_request


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(payload: Any) -> str:
    """Compact JSON with ISO-8601 datetimes and UUIDs as strings."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def encode_json(payload: Any) -> bytes:
    """``dumps`` as UTF-8; a lone surrogate (an upstream's "\\ud800") is escaped, as UTF-8 cannot hold it."""
    try:
        return dumps(payload).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload, ensure_ascii=True, separators=(",", ":"), default=_json_default).encode()


class InFlight:
    """Counts requests being served, so shutdown can wait for them to finish."""

    def __init__(self) -> None:
        self.count = 0


DEFAULT_MAX_BODY_BYTES = 1 << 20


@functools.lru_cache(maxsize=4)  # a new second is a new entry; the few latest are all that is asked for
def _http_date(second: int) -> str:
    """The HTTP ``Date`` value for a whole second (HTTP dates have no finer resolution)."""
    return tornado.httputil.format_timestamp(second)

# ASCII digits only: str.isdigit() also accepts "²" and "١", which int() refuses or reads otherwise.
_DIGITS = re.compile(r"[0-9]+")


def _larger_than(digits: str, limit: int) -> bool:
    """Whether a string of ASCII digits exceeds ``limit``, without int() on thousands of digits."""
    digits = digits.lstrip("0")
    return len(digits) > len(str(limit)) or int(digits or "0") > limit


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Answers every outcome, errors included, as JSON; never HTML, never a traceback.

    Bodies are streamed so an oversized one is refused with a JSON 413 (application setting
    ``max_body_bytes``) before it is read into memory.
    """

    def initialize(self, inflight: InFlight | None = None, **_: Any) -> None:
        self._inflight = inflight
        self._counted = False
        self._body = bytearray()
        self._too_large = False
        self._max_body = int(self.application.settings.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES))
        self._max_digits = len(str(self._max_body))

    def clear(self) -> None:
        """Tornado's reset of the response, without its ``Server`` header and with the ``Date`` header formatted
        once a second: Tornado formats it through ``email.utils`` for every response (~27k instructions)."""
        self._headers = tornado.httputil.HTTPHeaders()
        self._headers["Date"] = _http_date(int(time.time()))
        self.set_default_headers()
        self._write_buffer = []
        self._status_code = 200
        self._reason = tornado.httputil.responses[200]

    def set_default_headers(self) -> None:
        # Straight into the header map that clear() has just built: set_header would check each of these
        # constant values against its regular expression on every request.
        headers = self._headers
        headers["Content-Type"] = "application/json; charset=utf-8"
        headers["Cache-Control"] = "no-store"
        headers["X-Content-Type-Options"] = "nosniff"

    def prepare(self) -> Awaitable[None] | None:
        # Synchronous: Tornado awaits prepare() only when it returns an awaitable, and a subclass
        # returns one only when it must wait (an instance not in the cache).
        if self._inflight is not None:
            self._inflight.count += 1
            self._counted = True
        length = self.request.headers.get("Content-Length")
        # Fewer digits than the limit: smaller, whatever they are (the usual case, decided at once).
        if (length is not None and len(length) >= self._max_digits and _DIGITS.fullmatch(length)
                and _larger_than(length, self._max_body)):
            raise PayloadTooLarge(f"the request body is larger than {self._max_body} bytes")
        return None

    def data_received(self, chunk: bytes) -> None:
        # A chunked body has no Content-Length to refuse up front: keep reading (bounded by the
        # server's hard cap) but stop storing, and refuse it when the handler asks for it.
        if self._too_large or len(self._body) + len(chunk) > self._max_body:
            self._too_large = True
            self._body.clear()
            return
        self._body += chunk

    def _uncount(self) -> None:
        if self._counted and self._inflight is not None:
            self._inflight.count -= 1
            self._counted = False

    def on_finish(self) -> None:
        self._uncount()

    def on_connection_close(self) -> None:
        # Tornado's own fails the pending body read, which ends the request and frees its buffer;
        # without it a client that leaves mid-body would hold the handler and its bytes for ever.
        super().on_connection_close()
        body = getattr(self.request, "_body_future", None)
        if body is not None and body.done() and isinstance(body.exception(), tornado.iostream.StreamClosedError):
            self._count_aborted_body()
        self._body.clear()
        self._uncount()

    def _count_aborted_body(self) -> None:
        stats = self.application.settings.get("connection_stats")
        stream = getattr(self.request.connection, "stream", None)
        # A body the server gave up on is counted as a timeout there; this one the client abandoned.
        if stats is not None and not getattr(stream, "body_timed_out", False):
            stats.bodies_aborted += 1

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(encode_json(payload))

    def body_bytes(self) -> bytes:
        """The whole request body (a handler method runs only once it has arrived), or PayloadTooLarge."""
        if self._too_large:
            raise PayloadTooLarge(f"the request body is larger than {self._max_body} bytes")
        return bytes(self._body)

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object, or BadRequest saying what is wrong with it."""
        raw = self.body_bytes()
        if not raw:
            raise BadRequest("the request body is empty; send a JSON object", code="empty_body")
        try:
            body = parse_json(raw)
        except JsonInputError as e:
            raise BadRequest(f"the request body is not valid JSON: {e}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object", code="invalid_json")
        return body

    def send_error_body(self, err: PlatformError, body: str) -> None:
        """An error answer: its status and headers, and ``body`` (JSON)."""
        self.set_status(err.status)
        for name, value in err.headers().items():
            self.set_header(name, value)
        reading = getattr(self.request, "_body_future", None)
        if reading is not None and not reading.done():
            # Tornado closes the connection when it answers before it has read the whole request,
            # even one without a body (an answer from prepare()); saying so keeps a keep-alive client,
            # such as nginx's pool shared by every client, from sending the next request into it.
            self.set_header("Connection", "close")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        err = client_error(kwargs.get("exc_info", (None, None, None))[1], status_code, self._reason)
        self.send_error_body(err, json.dumps(err.body()))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # A client's mistake is not the server's error: no traceback for PlatformError / HTTPError.
        if isinstance(value, PlatformError):
            if value.status >= 500:
                log.warning("%s %s -> %d %s", scrub_method(self.request.method), scrub_path(self.request.path),
                            value.status, value.code)
            return
        if isinstance(value, tornado.web.HTTPError):
            return
        log.error("uncaught exception in %s %s", scrub_method(self.request.method), scrub_path(self.request.path),
                  exc_info=(typ, value, tb))


class MetricsHandler(BaseHandler):
    """GET /metrics: the process's metrics in the Prometheus text format."""

    def initialize(self, metrics: Metrics, inflight: InFlight | None = None, **_: Any) -> None:  # type: ignore[override]
        super().initialize(inflight=inflight)
        self.metrics = metrics

    async def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.metrics.render())


class NotFoundHandler(BaseHandler):
    """Default handler: any unrouted path is a JSON 404, whatever the method."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def prepare(self) -> None:
        raise NotFound(f"no endpoint at {scrub_path(self.request.path)}", code="not_found")
