"""The health probe: one GET of a process's ``/health``."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse


async def http_get_ok(url: str, timeout: float) -> bool:
    """GET ``url`` with a raw HTTP/1.1 request; True only for status 200 within ``timeout``."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "https"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: mcp-supervise\r\n"
               "Connection: close\r\n\r\n").encode("latin-1")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port or (443 if secure else 80),
                                                           ssl=True if secure else None)
            try:
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, ValueError, UnicodeError):  # includes TimeoutError and ssl errors
        return False
    fields = status_line.split()
    return len(fields) >= 2 and fields[0].startswith(b"HTTP/") and fields[1] == b"200"
