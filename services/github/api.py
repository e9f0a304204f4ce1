"""The GitHub REST client, bound to one instance's token for one call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from mcp.errors import UpstreamError
from mcp.server.upstream import UpstreamHTTP, UpstreamResponse, parse_retry_after

UPSTREAM = "github"
API_VERSION = "2022-11-28"
MEDIA_TYPE = "application/vnd.github+json"
# GitHub's advice when a secondary limit names no wait: "wait for at least one minute".
SECONDARY_DEFAULT_WAIT_S = 60
_RATE_HEADERS = ("limit", "remaining", "used", "reset", "resource")


def auth_headers(credentials: dict[str, str]) -> dict[str, str]:
    """Classic/fine-grained PATs and OAuth/App tokens are all Bearer tokens to the REST API."""
    token = credentials.get("api_key") or credentials["access_token"]
    return {
        "Authorization": f"Bearer {token}",
        "Accept": MEDIA_TYPE,
        "X-GitHub-Api-Version": API_VERSION,
    }


def _rate_limit(resp: UpstreamResponse) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for name in _RATE_HEADERS:
        value = resp.headers.get(f"x-ratelimit-{name}")
        if value is not None:
            info[name] = int(value) if value.isdigit() else value
    return info


def _format_errors(errors: Any) -> str:
    """GitHub's 422 ``errors`` list as one line: 'Issue.title missing_field; <custom message>'."""
    if not isinstance(errors, list):
        return ""
    parts = []
    for err in errors[:10]:
        if isinstance(err, str):
            parts.append(err)
        elif isinstance(err, dict):
            if err.get("message"):
                parts.append(str(err["message"]))
            else:
                where = ".".join(str(err[k]) for k in ("resource", "field") if err.get(k))
                parts.append(f"{where} {err.get('code', 'invalid')}".strip())
    return "; ".join(parts)


def _rate_limit_error(resp: UpstreamResponse, said: str, now: float) -> UpstreamError | None:
    """Primary (x-ratelimit-remaining: 0) or secondary (retry-after, or GitHub says so) limits."""
    status = resp.status
    if status not in (403, 429):
        return None
    info = _rate_limit(resp)
    retry_after = parse_retry_after(resp.headers.get("retry-after"), now)
    primary = info.get("remaining") == 0
    secondary = retry_after is not None or "secondary rate limit" in said.lower() or status == 429
    if not primary and not secondary:
        return None
    waits = [w for w in (retry_after,) if w is not None]
    reset_at = None
    if primary and isinstance(info.get("reset"), int):
        reset_at = datetime.fromtimestamp(info["reset"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        waits.append(max(0, int(info["reset"] - now + 0.999)))
    if not waits and not primary:
        waits.append(SECONDARY_DEFAULT_WAIT_S)
    wait = max(waits) if waits else None
    resource = info.get("resource", "core")
    if primary:
        msg = f"GitHub API rate limit exhausted for this token ({resource}: {info.get('limit', '?')} requests"
        msg += f"; resets at {reset_at}" if reset_at else ""
        msg += ")"
    else:
        msg = "GitHub secondary rate limit hit (too many requests in a short time or too much concurrency)"
    msg += f"; retry after {wait} s" if wait is not None else "; retry later"
    if said:
        msg += f". GitHub said: {said[:300]}"
    return UpstreamError(UPSTREAM, msg, status=status, code="rate_limited", retry_after_s=wait,
                         details={"limit": "primary" if primary else "secondary", "rate_limit": info})


def error_from(resp: UpstreamResponse, now: float | None = None) -> UpstreamError:
    """Map a non-2xx answer; GitHub's error body is {"message", "documentation_url", "errors"?}."""
    body = resp.json()
    said = str(body.get("message") or "") if isinstance(body, dict) else ""
    errors = body.get("errors") if isinstance(body, dict) else None
    limited = _rate_limit_error(resp, said, time.time() if now is None else now)
    if limited is not None:
        return limited
    status = resp.status
    details: dict[str, Any] = {}
    if status == 401:
        msg = ("GitHub rejected the token (401); it is wrong, expired or revoked: replace this instance's "
               "credentials with a valid token")
        code = "unauthorized"
    elif status == 403:
        msg = ("GitHub refused access (403): the token lacks the scope or permission for this action, or "
               "the repository's organisation blocks it")
        code = "forbidden"
        sso = resp.headers.get("x-github-sso")
        if sso:
            msg += "; the organisation enforces SAML SSO: authorize this token for it"
            details["sso"] = sso
    elif status == 404:
        msg = ("GitHub found nothing there (404): check owner, repo, number or path, and that the token can "
               "see the repository (private repositories answer 404 without access)")
        code = "not_found"
    elif status == 422:
        listed = _format_errors(errors)
        msg = "GitHub rejected the request as invalid (422)"
        if listed:
            msg += f": {listed}"
        code = "validation_failed"
        if isinstance(errors, list):
            details["errors"] = errors[:20]
    elif status == 410:
        msg, code = "GitHub says this is gone (410): the feature is disabled for this repository", "gone"
    elif status == 409:
        msg, code = "GitHub reports a conflict (409), e.g. the repository is empty", "conflict"
    elif status == 400:
        msg, code = "GitHub rejected the request (400); check the arguments", "bad_request"
    elif status >= 500:
        msg, code = f"GitHub failed ({status}); try again later", "upstream_unavailable"
    else:
        msg, code = f"GitHub answered HTTP {status}", "upstream_error"
    # The 422 message is usually just "Validation Failed", which the errors list already explains.
    if said and not (status == 422 and said == "Validation Failed" and errors):
        msg = f"{msg}. GitHub said: {said[:300]}"
    return UpstreamError(UPSTREAM, msg, status=status, code=code, details=details)


def next_link(resp: UpstreamResponse) -> str | None:
    """The rel="next" URL of a Link header: ``<https://...?page=2>; rel="next", <...>; rel="last"``."""
    header = resp.headers.get("Link")
    if not header:
        return None
    for part in header.split(","):
        segments = [s.strip() for s in part.split(";")]
        target = segments[0]
        if not (target.startswith("<") and target.endswith(">")):
            continue
        for param in segments[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "rel" and "next" in value.strip().strip('"').split():
                return target[1:-1]
    return None


def page_of(url: str) -> int | None:
    values = parse_qs(urlsplit(url).query).get("page")
    return int(values[0]) if values and values[0].isdigit() else None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


@dataclass
class Page:
    """Items gathered over one or more pages, and where to resume."""

    items: list[Any]
    has_more: bool
    next_page: int | None
    next_page_skip: int
    pages_fetched: int

    def summary(self) -> dict[str, Any]:
        return {"count": len(self.items), "has_more": self.has_more, "next_page": self.next_page,
                "next_page_skip": self.next_page_skip, "pages_fetched": self.pages_fetched}


def repo_path(owner: str, repo: str) -> str:
    return f"/repos/{quote(owner, safe='')}/{quote(repo, safe='')}"


class GitHubClient:
    """GitHub API calls; every request carries this instance's token and nothing else's."""

    def __init__(self, http: UpstreamHTTP, credentials: dict[str, str]) -> None:
        self._http = http
        self._headers = auth_headers(credentials)

    async def _send(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                    body: Any = None, url: str | None = None) -> UpstreamResponse:
        resp = await self._http.request(method, path, headers=self._headers, params=params, json_body=body,
                                        url=url)
        if not resp.ok:
            raise error_from(resp)
        return resp

    @staticmethod
    def _json(resp: UpstreamResponse) -> Any:
        data = resp.json()
        if data is None:
            raise UpstreamError(UPSTREAM, "GitHub answered with something that is not JSON",
                                status=resp.status, code="bad_response")
        return data

    async def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                    body: Any = None) -> Any:
        return self._json(await self._send(method, path, params=params, body=body))

    async def paginate(self, path: str, params: dict[str, Any], *, max_items: int, max_pages: int,
                       keep: Callable[[Any], bool] = lambda _: True) -> Page:
        """Follow rel="next" links from ``params["page"]`` until max_items are kept or pages run out.

        Next links are only followed to the configured API origin: a link elsewhere would carry
        this instance's token to a host it was never meant for.
        """
        items: list[Any] = []
        page = int(params.get("page") or 1)
        url: str | None = None
        fetched = 0
        while True:
            resp = await self._send("GET", path, params=None if url else params, url=url)
            fetched += 1
            data = self._json(resp)
            if not isinstance(data, list):
                raise UpstreamError(UPSTREAM, "GitHub answered a list request with something that is not a list",
                                    status=resp.status, code="bad_response")
            kept = [item for item in data if keep(item)]
            room = max_items - len(items)
            items.extend(kept[:room])
            link = next_link(resp)
            if link is not None and _origin(link) != _origin(self._http.base_url):
                raise UpstreamError(UPSTREAM, "GitHub's next-page link points at another host; refusing to "
                                    "send the token there", status=resp.status, code="bad_response")
            if len(kept) > room:
                # Stopped inside this page: resume here, skipping what was already returned.
                return Page(items, True, page, room, fetched)
            if link is None:
                return Page(items, False, None, 0, fetched)
            page = page_of(link) or page + 1
            if len(items) >= max_items or fetched >= max_pages:
                return Page(items, True, page, 0, fetched)
            url = link

    # Endpoints ----------------------------------------------------------------------------------

    async def me(self) -> Any:
        return await self._call("GET", "/user")

    async def search_repositories(self, query: str, *, page: int, per_page: int, sort: str | None,
                                  order: str | None) -> tuple[Any, bool]:
        resp = await self._send("GET", "/search/repositories",
                                params={"q": query, "sort": sort, "order": order, "page": page,
                                        "per_page": per_page})
        return self._json(resp), next_link(resp) is not None

    async def repository(self, owner: str, repo: str) -> Any:
        return await self._call("GET", repo_path(owner, repo))

    async def contents(self, owner: str, repo: str, path: str, ref: str | None) -> Any:
        # Quoted per segment so '#', '?', '%' and spaces in file names stay part of the path.
        suffix = f"/{quote(path, safe='/')}" if path else ""
        return await self._call("GET", f"{repo_path(owner, repo)}/contents{suffix}", params={"ref": ref})

    async def issues(self, owner: str, repo: str, params: dict[str, Any], *, max_items: int,
                     max_pages: int) -> Page:
        # The issues endpoint also returns pull requests; they carry a "pull_request" key.
        return await self.paginate(f"{repo_path(owner, repo)}/issues", params, max_items=max_items,
                                   max_pages=max_pages, keep=lambda item: "pull_request" not in item)

    async def issue(self, owner: str, repo: str, number: int) -> Any:
        return await self._call("GET", f"{repo_path(owner, repo)}/issues/{number}")

    async def create_issue(self, owner: str, repo: str, body: dict[str, Any]) -> Any:
        return await self._call("POST", f"{repo_path(owner, repo)}/issues", body=body)

    async def add_comment(self, owner: str, repo: str, number: int, body: str) -> Any:
        return await self._call("POST", f"{repo_path(owner, repo)}/issues/{number}/comments", body={"body": body})

    async def pulls(self, owner: str, repo: str, params: dict[str, Any], *, max_items: int,
                    max_pages: int) -> Page:
        return await self.paginate(f"{repo_path(owner, repo)}/pulls", params, max_items=max_items,
                                   max_pages=max_pages)

    async def pull_with_files(self, owner: str, repo: str, number: int, max_files: int) -> tuple[Any, Page]:
        base = f"{repo_path(owner, repo)}/pulls/{number}"
        pull, files = await asyncio.gather(
            self._call("GET", base),
            self.paginate(f"{base}/files", {"per_page": 100, "page": 1}, max_items=max_files,
                          max_pages=(max_files + 99) // 100),
        )
        return pull, files

    async def create_pull(self, owner: str, repo: str, body: dict[str, Any]) -> Any:
        return await self._call("POST", f"{repo_path(owner, repo)}/pulls", body=body)
