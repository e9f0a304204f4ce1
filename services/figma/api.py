"""The Figma REST client, bound to one instance's credentials for one call."""

from __future__ import annotations

from typing import Any

from mcp.errors import UpstreamError
from mcp.server.upstream import UpstreamHTTP, UpstreamResponse, parse_retry_after

UPSTREAM = "figma"
# Figma's "err" when it refuses the token itself (a 403, unlike other APIs' 401).
_TOKEN_REFUSALS = frozenset({"invalid token", "token expired", "expired token"})


def auth_headers(credentials: dict[str, str]) -> dict[str, str]:
    """Personal access tokens go in X-Figma-Token; OAuth tokens are Bearer tokens."""
    if "access_token" in credentials:
        return {"Authorization": f"Bearer {credentials['access_token']}"}
    return {"X-Figma-Token": credentials["api_key"]}


def error_from(resp: UpstreamResponse) -> UpstreamError:
    """Figma's error body is {"status": N, "err": "..."} (sometimes {"message": ...})."""
    body = resp.json()
    said = ""
    if isinstance(body, dict):
        said = str(body.get("err") or body.get("message") or "")
    status = resp.status
    if status == 429:
        retry = parse_retry_after(resp.headers.get("Retry-After"))
        limit_type = resp.headers.get("X-Figma-Rate-Limit-Type")
        wait = f"retry after {retry} s" if retry is not None else "retry later"
        return UpstreamError(UPSTREAM, f"Figma rate limit reached ({limit_type or 'unknown'} limit); {wait}",
                             status=status, code="rate_limited", retry_after_s=retry,
                             details={"rate_limit_type": limit_type})
    if status == 401:
        msg, code = "Figma rejected the token (401); replace this instance's credentials", "unauthorized"
    elif status == 403 and said.strip().lower() in _TOKEN_REFUSALS:
        # How Figma answers an expired, revoked or unknown token: the token itself is refused, whatever the file.
        msg = "Figma rejected the token (403): it is invalid, expired or revoked; replace this instance's credentials"
        code = "unauthorized"
    elif status == 403:
        msg = ("Figma refused access (403): the token is invalid, expired or lacks the scope for this file; "
               "check the token and the file's sharing")
        code = "forbidden"
    elif status == 404:
        msg, code = "Figma found nothing there (404): check the file key, node ids or project/team id", "not_found"
    elif status == 400:
        msg, code = "Figma rejected the request (400); check the arguments", "bad_request"
    elif status >= 500:
        msg = (f"Figma failed ({status}); for large renders reduce ids or scale, otherwise try again later")
        code = "upstream_unavailable"
    else:
        msg, code = f"Figma answered HTTP {status}", "upstream_error"
    if said:
        msg = f"{msg}. Figma said: {said[:300]}"
    return UpstreamError(UPSTREAM, msg, status=status, code=code)


class FigmaClient:
    """Figma API calls; every request carries this instance's token and nothing else's."""

    def __init__(self, http: UpstreamHTTP, credentials: dict[str, str]) -> None:
        self._http = http
        self._headers = auth_headers(credentials)

    async def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                    body: Any = None) -> Any:
        resp = await self._http.request(method, path, headers=self._headers, params=params, json_body=body)
        if not resp.ok:
            raise error_from(resp)
        data = resp.json()
        if data is None and resp.body:
            raise UpstreamError(UPSTREAM, "Figma answered with something that is not JSON",
                                status=resp.status, code="bad_response")
        return data if data is not None else {}

    async def me(self) -> Any:
        return await self._call("GET", "/v1/me")

    async def file(self, key: str, *, depth: int | None = None, ids: list[str] | None = None,
                   version: str | None = None) -> Any:
        return await self._call("GET", f"/v1/files/{key}", params={
            "depth": depth, "ids": ",".join(ids) if ids else None, "version": version})

    async def file_nodes(self, key: str, ids: list[str], depth: int | None = None) -> Any:
        return await self._call("GET", f"/v1/files/{key}/nodes", params={"ids": ",".join(ids), "depth": depth})

    async def images(self, key: str, ids: list[str], fmt: str, scale: float | None) -> Any:
        return await self._call("GET", f"/v1/images/{key}",
                                params={"ids": ",".join(ids), "format": fmt, "scale": scale})

    async def image_fills(self, key: str) -> Any:
        return await self._call("GET", f"/v1/files/{key}/images")

    async def versions(self, key: str) -> Any:
        return await self._call("GET", f"/v1/files/{key}/versions")

    async def comments(self, key: str, as_md: bool = False) -> Any:
        return await self._call("GET", f"/v1/files/{key}/comments", params={"as_md": as_md or None})

    async def post_comment(self, key: str, message: str, client_meta: dict[str, Any] | None = None,
                           comment_id: str | None = None) -> Any:
        body: dict[str, Any] = {"message": message}
        if client_meta is not None:
            body["client_meta"] = client_meta
        if comment_id is not None:
            body["comment_id"] = comment_id
        return await self._call("POST", f"/v1/files/{key}/comments", body=body)

    async def team_projects(self, team_id: str) -> Any:
        return await self._call("GET", f"/v1/teams/{team_id}/projects")

    async def project_files(self, project_id: str) -> Any:
        return await self._call("GET", f"/v1/projects/{project_id}/files")
