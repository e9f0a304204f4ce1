"""A local Figma REST API: Figma's paths, auth headers, JSON shapes and error bodies.

Tokens: any token is valid unless it starts with ``bad`` (403 "Invalid token", as Figma answers);
the user returned by /v1/me is derived from the token, so a test can tell whose token was used.
File key ``missing`` is a 404. Use ``fail()`` for 429s (with Retry-After and
X-Figma-Rate-Limit-Type) and 5xx.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from tests.simulators.base import Simulator

TOKEN = web.RequestKey("token", str)


def user_for(token: str) -> dict[str, Any]:
    digest = hashlib.sha256(token.encode()).hexdigest()[:10]
    return {"id": f"u{digest}", "handle": f"user-{digest}", "email": f"{digest}@example.com",
            "img_url": f"https://s3-alpha.figma.com/profile/{digest}"}


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


class FigmaSimulator(Simulator):
    def __init__(self) -> None:
        super().__init__(name="figma")
        self.comments: dict[str, list[dict[str, Any]]] = {}

    def routes(self, app: web.Application) -> None:
        app.middlewares.append(self._auth)
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
        token = token_of(request)
        if not token:
            return _error(403, "No token provided")
        if token.startswith("bad"):
            return _error(403, "Invalid token")
        request[TOKEN] = token
        key = request.match_info.get("key")
        if key == "missing":
            return _error(404, "Not found")
        return await handler(request)

    async def me(self, request: web.Request) -> web.Response:
        return web.json_response(user_for(request[TOKEN]))

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
        user = user_for(request[TOKEN])
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
                   "user": user_for(request[TOKEN]), "created_at": "2026-11-25T12:00:00Z", "resolved_at": None,
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
