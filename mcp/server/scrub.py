"""Request paths as they may be logged, measured or echoed: nothing in them that could be an instance id.

Instance ids are bearer capabilities, and a client may write one in many ways that a server still
serves or that are plainly the id (percent-encoded characters, braces, ``urn:uuid:``, a trailing
``;x`` or ``%00``). So rather than recognising ids, the scrubbed path is built only from segments
known to be safe:

- the instance position is always ``{instance}``, whatever it holds: the first segment in a service
  process (``/{instance}/mcp/call``) and the one after ``/api/instances/`` in the main API. A first
  segment that is one of the fixed roots of either process (``health``, ``metrics``, ``api``,
  ``oauth``) is kept, as no id can be spelled that way;
- any other segment is percent-decoded until stable (Tornado decodes path arguments, and a client
  may encode twice) and kept only if the result is short, plain ASCII (letters, digits, ``._~-``) and
  holds no run of 8 or more hex digits; otherwise it is ``{segment}``.

The method is shown only if it is a standard one (Tornado takes any token as a method), and
``MalformedRequestFilter`` keeps Tornado's own line about a request it refused from quoting it.
"""

from __future__ import annotations

import functools
import logging
import re
from urllib.parse import unquote

INSTANCE = "{instance}"
SEGMENT = "{segment}"
# Fixed first segments of a service process (/health, /metrics) and of the main API (/api/..., /oauth/...).
_ROOTS = frozenset({"health", "metrics", "api", "oauth"})
# In the main API, the segment after these is an instance id: /api/instances/<id>/usage.
_INSTANCE_PARENTS = frozenset({("api", "instances")})
_MAX_SEGMENT = 64
# Beyond these many segments the rest is summarised: a line per request should stay a line.
_MAX_SEGMENTS = 32
# Percent-decoding rounds before a segment still holding "%" is given up on (and replaced).
_MAX_DECODES = 4
_SAFE = re.compile(r"[A-Za-z0-9._~-]*")
# Any token is a valid HTTP method to Tornado (answered 405), so a method is shown only if it is a real one.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
OTHER_METHOD = "OTHER"
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{8}")


def _decoded(segment: str) -> str:
    for _ in range(_MAX_DECODES):
        if "%" not in segment:
            break
        decoded = unquote(segment, errors="replace")
        if decoded == segment:
            break
        segment = decoded
    return segment


def _safe_segment(segment: str) -> str:
    """The segment, decoded, if it cannot be (part of) an id or a secret; else ``{segment}``."""
    if len(segment) > 3 * _MAX_SEGMENT:  # decoding shrinks "%XX" to one character at most
        return SEGMENT
    decoded = _decoded(segment)
    if len(decoded) > _MAX_SEGMENT or not _SAFE.fullmatch(decoded) or _HEX_RUN.search(decoded):
        return SEGMENT
    return decoded


def scrub_method(method: str | None) -> str:
    """The request method fit for a log line or a metric label: a standard one, else ``OTHER``."""
    return method if method in _METHODS else OTHER_METHOD


# Longer paths are scrubbed each time rather than cached: 4,096 cached 60 KB paths would hold 240 MB.
_CACHED_UP_TO = 256


def scrub_path(path: str) -> str:
    """``path`` (as received: ``request.path``, still percent-encoded) fit for a log line or a message."""
    return _cached_scrub(path) if len(path) <= _CACHED_UP_TO else _scrub(path)


@functools.lru_cache(maxsize=4096)  # per request; the same few paths per instance come back all the time
def _cached_scrub(path: str) -> str:
    return _scrub(path)


def _scrub(path: str) -> str:
    parts = path.split("/")
    more = len(parts) > _MAX_SEGMENTS + 1
    if more:
        parts = parts[:_MAX_SEGMENTS + 1]
    out = [_safe_segment(part) for part in parts]
    if path.startswith("/") and len(parts) > 1:
        if out[1] not in _ROOTS and parts[1] != "":
            out[1] = INSTANCE
        elif len(out) > 3 and (out[1], out[2]) in _INSTANCE_PARENTS:
            out[3] = INSTANCE
    if more:
        out.append(SEGMENT)
    return "/".join(out)


# Tornado logs why it refused a request it could not parse ("Malformed HTTP message from <peer>: <why>"),
# and <why> quotes what was sent: a header value (an Authorization token, a Referer holding an instance
# URL), the Host header, the query string. Only the kind of fault is kept, from this list.
_MALFORMED = "Malformed HTTP message from %s: %s"
_FAULTS = (
    "Invalid header value", "Invalid header name", "Invalid Host header", "Multiple host headers not allowed",
    "Missing Host header", "Invalid query string", "Malformed HTTP request line", "Unexpected HTTP version",
    "Multiple unequal Content-Lengths", "Only integer Content-Length is allowed", "Content-Length too long",
    "Message with both Transfer-Encoding and Content-Length", "Unsupported Transfer-Encoding",
    "Unsupported Content-Encoding", "invalid chunk size", "improperly terminated chunk", "chunked body too large",
    "Body too long", "invalid gzip data", "decompressed body too large", "no colon in header line",
    "header line cannot start with whitespace",
)


def _fault(reason: object) -> str:
    text = str(reason)
    return next((fault for fault in _FAULTS if text.startswith(fault)), "unreadable request")


class MalformedRequestFilter(logging.Filter):
    """On ``tornado.general``: a refused request's line names the fault, never what the client sent."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _MALFORMED and isinstance(record.args, tuple) and len(record.args) == 2:
            record.args = (record.args[0], _fault(record.args[1]))
        return True
