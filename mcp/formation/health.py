"""The health probe: one GET of a process's ``/health``, with the platform's one definition of healthy.

Healthy means: HTTP status 200 and a JSON object body whose ``status`` is ``"healthy"``. A 200 alone is
not enough, because a process may answer 200 while it reports itself degraded, and anything else on the
port (another program, a proxy's error page) must not count as ours. The supervisor, ``scripts/status``,
``python -m mcp.ops wait-healthy`` and the main API's ``/api/services`` and ``/api/services/status`` all
ask this module, so they cannot disagree.

The request is a raw HTTP/1.1 GET on an asyncio connection: the supervisor and the API are asyncio
programs, and the supervisor must not load an HTTP client library (or Tornado) to ask one question.
``probe_sync`` wraps it for command-line tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

USER_AGENT = "mcp-health-probe"
# A /health body is a few hundred bytes; anything much larger is not ours and need not be read.
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Health:
    """One probe's verdict. ``http_status`` is None when no HTTP answer came (``error`` says why)."""

    healthy: bool
    http_status: int | None = None
    body: dict[str, Any] | None = None
    latency_ms: float | None = None
    error: str | None = None

    @property
    def reason(self) -> str | None:
        """Why it is not healthy, in a few words; None when healthy."""
        if self.healthy:
            return None
        if self.http_status is None:
            return f"not answering ({self.error})"
        if self.http_status != 200:
            return f"HTTP {self.http_status}"
        return f"status {(self.body or {}).get('status')!r}"


def is_healthy(status: int, body: Any) -> bool:
    """The definition: HTTP 200 and a JSON object whose ``status`` is ``"healthy"``."""
    return status == 200 and isinstance(body, dict) and body.get("status") == "healthy"


async def probe(url: str, timeout: float) -> Health:
    """GET ``url`` within ``timeout`` seconds and judge the answer; never raises for network trouble."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            raw = await _get(url)
    except (OSError, ValueError, UnicodeError, asyncio.IncompleteReadError) as e:  # TimeoutError is an OSError
        return Health(False, error=type(e).__name__)
    latency = round(1000 * (time.perf_counter() - started), 1)
    try:
        status, body = _parse(raw)
    except ValueError as e:
        return Health(False, latency_ms=latency, error=f"bad response: {e}")
    return Health(is_healthy(status, body), status, body if isinstance(body, dict) else None, latency)


async def probe_ok(url: str, timeout: float) -> bool:
    """``probe`` as a yes/no, the shape the supervisor's and the status table's checks take."""
    return (await probe(url, timeout)).healthy


def probe_sync(url: str, timeout: float) -> Health:
    """``probe`` for code without an event loop (the command-line helpers)."""
    return asyncio.run(probe(url, timeout))


async def _get(url: str) -> bytes:
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "https"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: {USER_AGENT}\r\n"
               "Accept: application/json\r\nConnection: close\r\n\r\n").encode("latin-1")
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port or (443 if secure else 80),
                                                   ssl=True if secure else None)
    try:
        writer.write(request)
        await writer.drain()
        data = b""
        # Connection: close, so the answer ends at EOF; stop early once the declared body is complete.
        while chunk := await reader.read(65536):
            data += chunk
            if len(data) > MAX_RESPONSE_BYTES or _complete(data):
                break
        return data
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _split(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no complete header")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = status_line.split()
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        raise ValueError("no HTTP status line")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(fields[1]), headers, body


def _complete(raw: bytes) -> bool:
    try:
        _, headers, body = _split(raw)
    except ValueError:
        return False
    length = headers.get("content-length", "")
    return length.isdigit() and len(body) >= int(length)


def _parse(raw: bytes) -> tuple[int, Any]:
    """(status, decoded JSON body or None)."""
    status, headers, body = _split(raw)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif headers.get("content-length", "").isdigit():
        body = body[:int(headers["content-length"])]
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out
