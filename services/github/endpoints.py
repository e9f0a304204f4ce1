"""GitHub's direct REST endpoints, beside the MCP tools."""

from __future__ import annotations

import re

from mcp.errors import BadRequest
from mcp.server.endpoints import InstanceHandler

# fullmatch, not match: "$" would also match before a final "\n" (a path segment "%0A").
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")
_REPO = re.compile(r"(?!\.\.?$)[A-Za-z0-9._-]{1,100}")


class RepositoryHandler(InstanceHandler):
    """GET /{instance}/api/repos/{owner}/{repo}: the repository as GitHub returns it."""

    async def get(self, instance: str, owner: str, repo: str) -> None:
        if not _OWNER.fullmatch(owner):
            raise BadRequest("owner must be a GitHub login: letters, digits, '-' or '_'", field="owner")
        if not _REPO.fullmatch(repo):
            raise BadRequest("repo must be a repository name: letters, digits, '.', '-' or '_'", field="repo")
        # The endpoint takes no query parameters; refusing them catches typos such as ?ref=.
        unknown = next(iter(self.request.query_arguments), None)
        if unknown is not None:
            raise BadRequest(f"unknown query parameter {unknown!r}; this endpoint takes none", field=unknown)
        self.write_json(await self.upstream(self.client.repository(owner, repo)))


ROUTES = [(r"/api/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)", RepositoryHandler)]
