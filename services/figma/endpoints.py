"""Figma's direct REST endpoints, beside the MCP tools."""

from __future__ import annotations

import re

from mcp.errors import BadRequest
from mcp.server.endpoints import InstanceHandler

_FILE_KEY = re.compile(r"[A-Za-z0-9]{1,64}")  # fullmatch: "$" would also match before a final "\n"
# ASCII digits only: str.isdigit() also accepts "²", which int() refuses, so depth=² must be a 400 here.
_DEPTH = re.compile(r"[0-9]{1,2}")


class FileHandler(InstanceHandler):
    """GET /{instance}/api/files/{fileKey}[?depth=N]: the file as Figma returns it."""

    async def get(self, instance: str, file_key: str) -> None:
        if not _FILE_KEY.fullmatch(file_key):
            raise BadRequest("the file key must be letters and digits", field="fileKey")
        depth_arg = self.get_query_argument("depth", None)
        depth = None
        if depth_arg is not None:
            if not _DEPTH.fullmatch(depth_arg) or not 1 <= int(depth_arg) <= 10:
                raise BadRequest("depth must be an integer from 1 to 10", field="depth")
            depth = int(depth_arg)
        self.write_json(await self.upstream(self.client.file(file_key, depth=depth)))


ROUTES = [(r"/api/files/(?P<file_key>[^/]+)", FileHandler)]
