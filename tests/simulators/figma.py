"""A local Figma REST API: Figma's paths, auth headers, JSON shapes and error bodies.

Tokens: any token is valid unless it starts with ``bad`` (403 "Invalid token", as Figma answers);
the user returned by /v1/me is derived from the token, so a test can tell whose token was used.
File key ``missing`` is a 404. Use ``fail()`` for 429s (with Retry-After and
X-Figma-Rate-Limit-Type) and 5xx.

OAuth: ``/oauth`` (www.figma.com's page) redirects back with a code as a user who clicks "Allow access";
``/v1/oauth/token`` exchanges it (client credentials by HTTP Basic or in the form) and answers
``{user_id, user_id_string, access_token, token_type, refresh_token, expires_in}``; ``/v1/oauth/refresh``
answers ``{access_token, token_type, expires_in}`` with no new refresh token, the old one staying valid.
Token-endpoint errors are Figma's ``{"error": true, "status": 400, "message": ..., "i18n": null}``. Issued
tokens are checked by the API (expired or revoked: 403 "Invalid token") and /v1/me answers their account.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from tests.simulators.base import Simulator
from tests.simulators.oauth import OAuthMixin, ProviderRules, client_credentials, form_of

TOKEN = web.RequestKey("token", str)
ACCOUNT = web.RequestKey("account", str)
# Figma's OAuth access tokens live 90 days; its refresh tokens do not expire and are not rotated.
FIGMA_RULES = ProviderRules(access_prefix="figu_", refresh_prefix="figur_", default_access_lifetime_s=7776000,
                            default_refresh_lifetime_s=None, rotate_refresh=False, refresh_kills_old_access=False)


def user_for(token: str, account: str | None = None) -> dict[str, Any]:
    """The user a token belongs to: an OAuth grant's account (its handle), else one derived from the token."""
    digest = hashlib.sha256((account or token).encode()).hexdigest()[:10]
    return {"id": user_id(account) if account else f"u{digest}", "handle": account or f"user-{digest}",
            "email": f"{account or digest}@example.com", "img_url": f"https://s3-alpha.figma.com/profile/{digest}"}


def user_id(account: str) -> str:
    """A Figma user id is a number (``user_id_string`` in the token response, ``id`` in /v1/me)."""
    return str(int(hashlib.sha256(account.encode()).hexdigest()[:12], 16))


def _oauth_error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": True, "status": status, "message": message, "i18n": None}, status=status)


def token_of(request: web.Request) -> str | None:
    if "X-Figma-Token" in request.headers:
        return request.headers["X-Figma-Token"]
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:]
    return None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"status": status, "err": message}, status=status)


def _tree(depth: int, prefix: str = "0") -> dict[str, Any]:
    node: dict[str, Any] = {"id": f"{prefix}:0", "name": "Document", "type": "DOCUMENT"}
    if depth > 0:
        node["children"] = [
            {"id": f"{i}:1", "name": f"Page {i}", "type": "CANVAS",
             **({"children": [{"id": f"{i}:2", "name": "Frame", "type": "FRAME"}]} if depth > 1 else {})}
            for i in (1, 2)
        ]
    return node


class FigmaSimulator(OAuthMixin, Simulator):
    oauth_rules = FIGMA_RULES
    oauth_env_prefix = "FIGMA"
    authorize_path = "/oauth"
    token_path = "/v1/oauth/token"
    refresh_path = "/v1/oauth/refresh"
    single_use_refresh = False
    default_scope = "current_user:read"

    def __init__(self) -> None:
        super().__init__(name="figma")
        self.comments: dict[str, list[dict[str, Any]]] = {}
        self._oauth_init()

    def routes(self, app: web.Application) -> None:
        app.middlewares.append(self._auth)
        app.router.add_get(self.authorize_path, self.oauth_authorize)
        app.router.add_post(self.token_path, self.oauth_token)
        assert self.refresh_path is not None
        app.router.add_post(self.refresh_path, self.oauth_refresh)
        app.router.add_get("/v1/me", self.me)
        app.router.add_get("/v1/files/{key}", self.file)
        app.router.add_get("/v1/files/{key}/nodes", self.nodes)
        app.router.add_get("/v1/images/{key}", self.images)
        app.router.add_get("/v1/files/{key}/images", self.image_fills)
        app.router.add_get("/v1/files/{key}/versions", self.versions)
        app.router.add_get("/v1/files/{key}/comments", self.list_comments)
        app.router.add_post("/v1/files/{key}/comments", self.post_comment)
        app.router.add_get("/v1/teams/{team}/projects", self.team_projects)
        app.router.add_get("/v1/projects/{project}/files", self.project_files)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in (self.authorize_path, self.token_path, self.refresh_path):
            return await handler(request)  # OAuth: the client authenticates itself, not a user
        token = token_of(request)
        if not token:
            return _error(403, "No token provided")
        if token.startswith("bad"):
            return _error(403, "Invalid token")
        status, grant = self._oauth.check_access(token)
        if status in ("expired", "revoked"):
            return _error(403, "Invalid token")
        request[TOKEN] = token
        if grant is not None:
            request[ACCOUNT] = grant.account
        key = request.match_info.get("key")
        if key == "missing":
            return _error(404, "Not found")
        return await handler(request)

    def _user(self, request: web.Request) -> dict[str, Any]:
        return user_for(request[TOKEN], request.get(ACCOUNT))

    # OAuth ----------------------------------------------------------------------------------------

    async def oauth_authorize(self, request: web.Request) -> web.Response:
        def missing(name: str) -> web.Response:
            return _oauth_error(f"Parameter {name} is required" if not request.query.get(name)
                                else f"Invalid {name}")
        if request.query.get("response_type", "code") != "code":
            return _oauth_error("Invalid response_type")
        return await self._authorize(request, missing, {"error": "access_denied"})

    def _check_client(self, request: web.Request, args: dict[str, str]) -> str | None:
        client_id, secret = client_credentials(request, args)
        if not client_id:
            return "Parameter client_id is required"
        if client_id != self._oauth.client_id or secret != self._oauth.client_secret:
            return "Invalid client credentials"
        return None

    async def oauth_token(self, request: web.Request) -> web.Response:
        args = await form_of(request)
        code_value = args.get("code", "")
        oauth = self._oauth
        with self._lock:
            injected = oauth.take_failure_locked()
            if injected is not None:
                oauth.record_locked("authorization_code", code_value, f"http_{injected}")
                return _oauth_error("Service unavailable", injected)
            problem = self._check_client(request, args)
            if problem:
                oauth.record_locked("authorization_code", code_value, "invalid_client")
                return _oauth_error(problem)
            if args.get("grant_type") != "authorization_code":
                oauth.record_locked(args.get("grant_type") or "", code_value, "unsupported_grant_type")
                return _oauth_error("Invalid grant_type")
            reason, code, tokens = oauth.exchange_code_locked(code_value, args.get("redirect_uri"),
                                                              args.get("code_verifier"),
                                                              client_credentials(request, args)[0])
            if code is None:
                oauth.record_locked("authorization_code", code_value, "invalid_grant")
                return _oauth_error("Invalid redirect_uri" if reason == "redirect_uri" else "Invalid code")
        uid = user_id(code.account)
        return web.json_response({"user_id": int(uid), "user_id_string": uid, "access_token": tokens["access_token"],
                                  "token_type": "bearer", "refresh_token": tokens["refresh_token"],
                                  "expires_in": tokens["expires_in"]})

    async def oauth_refresh(self, request: web.Request) -> web.Response:
        args = await form_of(request)
        refresh_token = args.get("refresh_token", "")
        oauth = self._oauth
        with self._lock:
            injected = oauth.take_failure_locked()
            if injected is not None:
                oauth.record_locked("refresh_token", refresh_token, f"http_{injected}")
                return _oauth_error("Service unavailable", injected)
            problem = self._check_client(request, args)
            if problem:
                oauth.record_locked("refresh_token", refresh_token, "invalid_client")
                return _oauth_error(problem)
            reason, grant, tokens = oauth.use_refresh_locked(refresh_token)
            if grant is None or reason != "ok":
                oauth.record_locked("refresh_token", refresh_token, "invalid_grant", grant.account if grant else None)
                return _oauth_error("Invalid refresh token")
        return web.json_response({"access_token": tokens["access_token"], "token_type": "bearer",
                                  "expires_in": tokens["expires_in"]})

    # API ------------------------------------------------------------------------------------------

    async def me(self, request: web.Request) -> web.Response:
        return web.json_response(self._user(request))

    async def file(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        depth = int(request.query.get("depth", "3"))
        return web.json_response({
            "name": f"File {key}", "role": "owner", "lastModified": "2026-11-01T10:00:00Z", "editorType": "figma",
            "thumbnailUrl": f"https://example.figma.com/thumb/{key}", "version": "4242", "schemaVersion": 0,
            "document": _tree(depth), "components": {}, "componentSets": {}, "styles": {},
        })

    async def nodes(self, request: web.Request) -> web.Response:
        ids = request.query.get("ids")
        if not ids:
            return _error(400, "Parameter ids is required")
        key = request.match_info["key"]
        return web.json_response({
            "name": f"File {key}", "lastModified": "2026-11-01T10:00:00Z", "version": "4242",
            "nodes": {i: {"document": {"id": i, "name": f"Node {i}", "type": "FRAME"}, "components": {},
                          "styles": {}, "schemaVersion": 0} for i in ids.split(",")},
        })

    async def images(self, request: web.Request) -> web.Response:
        ids = request.query.get("ids")
        if not ids:
            return _error(400, "Parameter ids is required")
        fmt = request.query.get("format", "png")
        key = request.match_info["key"]
        return web.json_response({"err": None, "status": 200, "images": {
            i: f"https://figma-alpha-api.s3.us-west-2.amazonaws.com/images/{key}/{i}.{fmt}" for i in ids.split(",")}})

    async def image_fills(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        return web.json_response({"error": False, "status": 200, "meta": {"images": {
            "a1b2c3": f"https://s3-alpha.figma.com/img/{key}/a1b2c3"}}})

    async def versions(self, request: web.Request) -> web.Response:
        user = self._user(request)
        return web.json_response({"versions": [
            {"id": "4242", "created_at": "2026-11-01T10:00:00Z", "label": "v2", "description": "", "user": user},
            {"id": "4241", "created_at": "2026-10-01T10:00:00Z", "label": "v1", "description": "", "user": user},
        ], "pagination": {}})

    async def list_comments(self, request: web.Request) -> web.Response:
        return web.json_response({"comments": self.comments.get(request.match_info["key"], [])})

    async def post_comment(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict) or not body.get("message"):
            return _error(400, "message is required")
        key = request.match_info["key"]
        existing = self.comments.setdefault(key, [])
        comment = {"id": str(1000 + len(existing)), "file_key": key, "parent_id": body.get("comment_id", ""),
                   "user": self._user(request), "created_at": "2026-11-25T12:00:00Z", "resolved_at": None,
                   "message": body["message"], "client_meta": body.get("client_meta"),
                   "order_id": str(len(existing) + 1)}
        existing.append(comment)
        return web.json_response(comment)

    async def team_projects(self, request: web.Request) -> web.Response:
        team = request.match_info["team"]
        return web.json_response({"name": f"Team {team}", "projects": [
            {"id": "101", "name": "Design system"}, {"id": "102", "name": "Website"}]})

    async def project_files(self, request: web.Request) -> web.Response:
        project = request.match_info["project"]
        return web.json_response({"name": f"Project {project}", "files": [
            {"key": "abc123", "name": "Homepage", "thumbnail_url": "https://example.figma.com/t/abc123",
             "last_modified": "2026-11-01T10:00:00Z"}]})
