"""Keeping an OAuth instance's access token usable while the instance serves calls.

Before a call, a token within ``margin_s`` of its expiry is refreshed; after the upstream says a token is
expired or invalid, it is refreshed once and the call retried (see ``call_tool`` in mcp/server/endpoints.py).
The refresh itself is mcp.oauth.refresh's: a row lock serializes it across processes and hosts, and a process
shares one refresh among its concurrent callers. Here the instance is then read back and cached in place of
the old copy, so this process's next request uses the new token at once instead of waiting for the NOTIFY.

Static credentials (an api_key, a bare access_token) have no ``token_expires_at`` and no refresh token:
nothing here ever runs for them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from mcp.errors import PlatformError
from mcp.oauth.client import ReauthRequired, TokenEndpointUnavailable
from mcp.oauth.refresh import TokenRefresher
from mcp.tenancy.instances import Instance, InstanceResolver

# The "a token that expires within a minute is refreshed"; OAUTH_REFRESH_MARGIN overrides it.
DEFAULT_MARGIN_S = 60.0


class FreshTokens:
    """One per service process: refreshes instances' tokens and caches the refreshed instances."""

    def __init__(self, refresher: TokenRefresher, resolver: InstanceResolver, display_name: str,
                 margin_s: float = DEFAULT_MARGIN_S) -> None:
        self.refresher = refresher
        self.resolver = resolver
        self.display_name = display_name
        self.margin_s = margin_s
        # instance key -> the refresh (and read-back) in progress, shared by every caller in this process.
        self._inflight: dict[str, asyncio.Task[Instance]] = {}

    def due(self, instance: Instance) -> bool:
        """Whether the instance's access token expires within the margin (and can be refreshed)."""
        expires = instance.token_expires_at
        return (expires is not None and expires.timestamp() - self.margin_s <= time.time()
                and self.can_refresh(instance))

    def can_refresh(self, instance: Instance) -> bool:
        return "refresh_token" in instance.credentials and self.refresher.configured

    async def refreshed(self, instance: Instance, deadline: float | None = None) -> Instance:
        """The instance with credentials valid now (refreshed unless another caller or process just did).

        Raises ReauthRequired (the grant is dead; the instance is now ``reauth_required``),
        TokenEndpointUnavailable (try again later; also when ``deadline``, event-loop time, passes first),
        or OAuthError (the instance cannot be refreshed at all). A caller that gives up does not cancel the
        refresh: new tokens the provider has issued must be stored.
        """
        task = self._inflight.get(instance.key)
        if task is None:
            task = asyncio.ensure_future(self._refresh(instance))
            self._inflight[instance.key] = task
            task.add_done_callback(lambda t: self._done(instance.key, t))
        if deadline is None:
            return await asyncio.shield(task)
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(task)
        except TimeoutError:
            raise TokenEndpointUnavailable("timeout", f"the {self.display_name} token refresh did not finish "
                                                      "within the request's time limit") from None

    async def _refresh(self, instance: Instance) -> Instance:
        try:
            credentials = await self.refresher.refresh(instance.id, instance.credentials.get("access_token"))
        except ReauthRequired:
            self.resolver.invalidate(instance.id)  # its status changed: the next request reads it and gets the 403
            raise
        try:
            fresh = await self.resolver.reload(instance.id)
        except PlatformError:
            fresh = None  # the database answered the refresh; the read-back is an optimisation
        return fresh if fresh is not None else replace(instance, credentials=credentials)

    def _done(self, key: str, task: asyncio.Task[Instance]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved, so a refresh whose callers all left logs no "never retrieved"

    async def close(self) -> None:
        """Let refreshes in flight store their tokens before the process exits."""
        tasks = list(self._inflight.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.refresher.close()
