"""The HTTP seam to upstream APIs: one aiohttp session per process, one base URL per service.

A service's client (``services/<name>/api.py``) wraps ``UpstreamHTTP`` with its auth headers and
its error vocabulary. Network failures are turned into ``UpstreamError`` here, once for all;
``json_answer`` turns an answer into its JSON body or an ``UpstreamError``, including for APIs that
report failures inside a 200 body (Slack's ``ok: false``, GraphQL's ``errors``).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Callable, Hashable
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
        # The session's own timeout (UPSTREAM_TIMEOUT) bounds every call; a nearer deadline shortens it (no timer
        # of our own). Passed explicitly: aiohttp reads timeout=None as "no timeout at all".
        timeout = session_timeout = self.session.timeout
        deadline = self._deadline
        if deadline is not None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise self._past_deadline()
            if left < session_timeout.total:  # type: ignore[operator]
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
            if timeout is not session_timeout:
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


# What an API said went wrong inside a 2xx answer's JSON body, or None when the body is a success.
InBodyError = Callable[[Any], str | None]
# Builds the UpstreamError for a failed answer from the answer and its parsed body (None: not JSON).
ErrorBuilder = Callable[[UpstreamResponse, Any], UpstreamError]


def json_answer(resp: UpstreamResponse, upstream: str, *, in_body_error: InBodyError | None = None,
                error: ErrorBuilder | None = None) -> Any:
    """The JSON body of a successful answer; any other answer raises an UpstreamError.

    An answer fails when its status is not 2xx, when its body is not JSON (an empty 2xx body is
    ``{}``), or when ``in_body_error(body)`` names a failure: the hook for APIs that answer 200 with
    the error inside (Slack's ``ok: false``, GraphQL's ``errors``). ``error(resp, body)`` builds the
    UpstreamError in the service's own words; without it ``default_error`` does.
    """
    body = resp.json()
    if resp.ok and body is None and not resp.body:
        body = {}
    said = None
    if resp.ok and body is not None:
        said = in_body_error(body) if in_body_error is not None else None
        if said is None:
            return body
    if error is not None:
        raise error(resp, body)
    raise default_error(resp, upstream, said)


def default_error(resp: UpstreamResponse, upstream: str, said: str | None = None) -> UpstreamError:
    """An UpstreamError for a failed answer, for a service with no error vocabulary of its own.

    ``said`` is the failure found inside a 2xx body. The status picks the code a direct endpoint
    maps (404 stays 404, 429 carries Retry-After); the message tells a person what to do next.
    """
    status = resp.status
    if said is not None:
        return UpstreamError(upstream, f"{upstream} refused the request: {said[:300]}", status=status,
                             code="upstream_error")
    if resp.ok:
        return UpstreamError(upstream, f"{upstream} answered with something that is not JSON", status=status,
                             code="bad_response")
    if status == 429:
        retry = parse_retry_after(resp.headers.get("Retry-After"))
        wait = f"retry after {retry} s" if retry is not None else "retry later"
        return UpstreamError(upstream, f"{upstream} rate limit reached; {wait}", status=status,
                             code="rate_limited", retry_after_s=retry)
    code, hint = _STATUS_HINTS.get(status, ("upstream_error", "check the arguments"))
    if status >= 500:
        code, hint = "upstream_unavailable", "try again later"
    return UpstreamError(upstream, f"{upstream} answered HTTP {status}; {hint}", status=status, code=code)


_STATUS_HINTS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "check the arguments"),
    401: ("unauthorized", "replace this instance's credentials"),
    403: ("forbidden", "the credentials lack access to this; check their scopes"),
    404: ("not_found", "check the ids in the arguments"),
}

