"""The HTTP seam to upstream APIs: one aiohttp session per process, one base URL per service.

A service's client (``services/<name>/api.py``) wraps ``UpstreamHTTP`` with its auth headers and
its error vocabulary. Network failures are turned into ``UpstreamError`` here, once for all.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Hashable
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDictProxy

from mcp.errors import UpstreamError
from mcp.server.limits import ConcurrencyLimiter

USER_AGENT = "mcp-platform/0.1 (+https://github.com/)"


def make_session(timeout_s: float, max_connections: int = 200) -> aiohttp.ClientSession:
    """The process's one upstream session; call inside the running event loop, close at shutdown."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 10.0)),
        connector=aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=300),
        headers={"User-Agent": USER_AGENT},
        trust_env=False,
    )


class UpstreamResponse(NamedTuple):
    """One upstream answer (one per call: a cheap tuple)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def parse_retry_after(value: str | None, now: float | None = None) -> int | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0, int(when - (now if now is not None else time.time()) + 0.999))


class UpstreamHTTP:
    """Requests to one upstream API on the shared session; knows nothing of credentials."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, upstream: str,
                 limiter: ConcurrencyLimiter | None = None, key: Hashable = None,
                 deadline: float | None = None) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.upstream = upstream
        self._limiter = limiter
        self._key = key
        # The request's deadline (event-loop time): no call may outlast it, waiting for a slot included.
        self._deadline = deadline

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        url: str | None = None,
    ) -> UpstreamResponse:
        """Send one request (``url`` overrides base_url + path, for pagination links).

        Raises UpstreamError(code="timeout" | "unreachable") when no HTTP answer arrives,
        UpstreamError(code="deadline_exceeded") when the request's deadline passes first, and
        UpstreamError(code="bad_response") for a ``url`` on another origin than base_url (a
        pagination link pointing elsewhere would otherwise receive the instance's credentials).
        Any HTTP answer, error statuses included, is returned for the service to interpret.
        """
        if url is not None and _origin(url) != _origin(self.base_url):
            raise UpstreamError(self.upstream, f"{self.upstream} sent a link to another host; it was not followed",
                                code="bad_response")
        target = url or f"{self.base_url}{path}"
        clean_params = None
        if params:
            clean_params = {k: _param(v) for k, v in params.items() if v is not None}
        # The session's own timeout bounds every call; a nearer deadline shortens it (no timer of our own).
        timeout = None
        deadline = self._deadline
        if deadline is not None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise self._past_deadline()
            if left < self.session.timeout.total:  # type: ignore[operator]
                timeout = aiohttp.ClientTimeout(total=left, connect=min(left, 10.0))
        limiter = self._limiter
        if limiter is not None:
            try:
                await limiter.acquire(self._key, deadline)
            except TimeoutError:
                raise self._past_deadline() from None
        try:
            async with self.session.request(method, target, headers=headers, params=clean_params,
                                            json=json_body, timeout=timeout) as resp:
                body = await resp.read()
                # resp.headers is already a read-only view that outlives the response.
                return UpstreamResponse(resp.status, resp.headers, body)
        except TimeoutError:
            if timeout is not None:
                raise self._past_deadline() from None
            raise UpstreamError(
                self.upstream,
                f"{self.upstream} did not answer in time; try again shortly",
                code="timeout",
            ) from None
        except aiohttp.ClientError as e:
            raise UpstreamError(
                self.upstream,
                f"could not reach {self.upstream} ({type(e).__name__}); check the network or try again later",
                code="unreachable",
            ) from None
        finally:
            if limiter is not None:
                limiter.release(self._key)

    def _past_deadline(self) -> UpstreamError:
        return UpstreamError(self.upstream, f"the {self.upstream} call ran past the request's time limit and was "
                             "abandoned; try again, or ask for less at once", code="deadline_exceeded")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def _param(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
