"""Each catalog service's OAuth provider and this deployment's app for it, as the API knows them.

The API imports no service package, so a provider comes from the catalog (``mcp_table.oauth``, written by
``db.migrate``); the app registration (client id and secret, endpoint overrides) comes from the environment the
API started with. Both are read once per service, on first use, and kept for the life of the process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from mcp.oauth.provider import OAuthProvider
from mcp.oauth.settings import OAuthApp, oauth_app

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceOAuth:
    """A catalog service's OAuth: ``provider`` None when the service has none, ``app`` None when not configured."""

    service: str
    provider: OAuthProvider | None
    app: OAuthApp | None


class OAuthApps:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._known: dict[str, ServiceOAuth] = {}

    async def get(self, conn: psycopg.AsyncConnection[Any], service: str) -> ServiceOAuth | None:
        """The service's OAuth, or None when the catalog has no such service."""
        known = self._known.get(service)
        if known is not None:
            return known
        cur = await conn.execute("SELECT oauth FROM mcp_table WHERE name = %s", (service,))
        row = await cur.fetchone()
        if row is None:
            return None
        provider = OAuthProvider.from_json(row["oauth"]) if row["oauth"] else None
        app = oauth_app(provider, self._environ) if provider is not None else None
        known = self._known.setdefault(service, ServiceOAuth(service, provider, app))
        if provider is not None and app is None:
            log.info("%s accounts cannot be connected: its OAuth app is not configured", service)
        return known
