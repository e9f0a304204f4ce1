"""Slack's direct REST endpoints, beside the MCP tools."""

from __future__ import annotations

import re

from mcp.errors import BadRequest, UpstreamError
from mcp.server.endpoints import InstanceHandler
from services.slack.tools import DEFAULT_TYPES, channel_summary

_CURSOR = re.compile(r"[A-Za-z0-9+/=_-]{1,1000}")
_LIMIT = re.compile(r"[0-9]{1,4}")
DEFAULT_LIMIT = 200


class ChannelsHandler(InstanceHandler):
    """GET /{instance}/api/channels[?limit=N&cursor=C]: public and private channels, archived left out.

    ``limit`` is how many channels to return (1-1000); Slack's cursors are followed until that many
    are collected, and ``next_cursor`` (null at the end) continues from there.
    """

    async def get(self, instance: str) -> None:
        limit_arg = self.get_query_argument("limit", None)
        limit = DEFAULT_LIMIT
        if limit_arg is not None:
            if not _LIMIT.fullmatch(limit_arg) or not 1 <= int(limit_arg) <= 1000:
                raise BadRequest("limit must be an integer from 1 to 1000", field="limit")
            limit = int(limit_arg)
        cursor = self.get_query_argument("cursor", None)
        if cursor is not None and not _CURSOR.fullmatch(cursor):
            raise BadRequest("cursor must be a next_cursor from a previous answer", field="cursor")
        try:
            channels, next_cursor = await self.client.list_channels(
                types=DEFAULT_TYPES, page_size=min(limit, DEFAULT_LIMIT), max_items=limit, cursor=cursor)
        except UpstreamError as e:
            if e.code == "invalid_cursor":
                # Slack refusing the client's own cursor is the client's mistake (400), not a bad gateway.
                raise BadRequest("cursor is not a next_cursor from a previous answer, or it has expired; start "
                                 "again without it", field="cursor", code="invalid_cursor") from None
            raise e.as_http_error() from None
        self.write_json({"channels": [channel_summary(c) for c in channels], "next_cursor": next_cursor})


ROUTES = [(r"/api/channels", ChannelsHandler)]
