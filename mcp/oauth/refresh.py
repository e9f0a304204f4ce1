"""The one refresh protocol, used by every service process and by the API's background job.

Exactly one refresh per instance at a time across processes and hosts: the refresh runs inside a transaction
that holds ``SELECT ... FOR UPDATE`` on the instance row. Whoever gets the lock second re-reads the row, sees
that the access token changed (and is good for a while) and uses it instead of refreshing again. The new tokens
are committed in the same transaction; the row's trigger NOTIFYs every process so they drop their cached copy.

A refresh token is sent at most once from here. Providers that rotate refresh tokens (GitHub, Slack) make the
old one invalid on first use, and may revoke the whole grant when they see it twice, so a transient failure
after the request was sent is reported, never retried. Within one process, ``TokenRefresher`` makes concurrent
callers for the same instance share a single refresh.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
import psycopg

from mcp.oauth.client import OAuthError, ReauthRequired, TokenEndpointUnavailable, refresh_tokens
from mcp.oauth.settings import OAuthApp
from mcp.oauth.tokens import store_tokens, token_credentials
from mcp.tenancy.credentials import CredentialCipher, DecryptionError
from mcp.tenancy.database import Database

log = logging.getLogger(__name__)

# Longer than the token request's own timeout: a waiter outlasts the holder's HTTP call, never the reverse.
LOCK_TIMEOUT_S = 30
MAX_INFLIGHT = 1024


async def refresh_instance(db: Database, cipher: CredentialCipher, app: OAuthApp, session: aiohttp.ClientSession,
                           instance_id: uuid.UUID, *, seen_access_token: str | None,
                           min_validity_s: float = 60.0) -> dict[str, str]:
    """Refresh the instance's tokens unless another process just did; return the credentials valid now.

    ``seen_access_token`` is the token the caller found wanting (None: the caller has none in hand, e.g. the
    background job). A stored token different from it and valid for more than ``min_validity_s`` seconds is
    returned as is (pass ``math.inf`` to refresh whatever the access token's expiry).

    Raises ReauthRequired (status set to 'reauth_required' and committed), TokenEndpointUnavailable (nothing
    changed), or OAuthError (the instance cannot be refreshed: gone, not active, no refresh token, app refused).
    """
    service = app.provider.display_name or app.provider.service
    dead: ReauthRequired | None = None
    async with db.connection() as conn:
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'")
                cur = await conn.execute(
                    "SELECT status, credentials_enc, token_expires_at FROM service_instances "
                    "WHERE id = %s AND service_name = %s FOR UPDATE", (instance_id, app.provider.service))
                row = await cur.fetchone()
                if row is None:
                    raise OAuthError("instance_not_found", f"the {service} instance no longer exists")
                if row["status"] in ("reauth_required", "pending"):
                    raise ReauthRequired("reauth_required", f"the {service} account must be connected again")
                if row["status"] != "active":
                    raise OAuthError("instance_not_active", f"the {service} instance is {row['status']}")
                try:
                    creds = cipher.decrypt(instance_id, row["credentials_enc"])
                except DecryptionError as e:
                    raise OAuthError("credentials_unreadable", f"the stored {service} credentials: {e}") from None
                current = creds.get("access_token")
                if current and current != seen_access_token and _valid_for(row["token_expires_at"]) > min_validity_s:
                    return creds  # another process (or host) refreshed while we waited for the lock
                refresh_token = creds.get("refresh_token")
                if not refresh_token:
                    raise OAuthError("no_refresh_token",
                                     f"the {service} credentials have no refresh token; connect the account again")
                try:
                    tokens = await refresh_tokens(session, app, refresh_token)
                except ReauthRequired as e:
                    await conn.execute("UPDATE service_instances SET status = 'reauth_required', updated_at = now() "
                                       "WHERE id = %s", (instance_id,))
                    dead = e  # committed on leaving the block, raised after
                else:
                    await store_tokens(conn, cipher, instance_id, tokens, keep_refresh_token=refresh_token)
                    return token_credentials(tokens, refresh_token)
        except psycopg.errors.LockNotAvailable:
            raise TokenEndpointUnavailable("refresh_busy",
                                           f"another {service} token refresh is taking too long") from None
    assert dead is not None
    log.warning("%s refresh token refused (%s): the instance needs its account connected again",
                app.provider.service, dead.code)
    raise dead


def _valid_for(expires_at: datetime | None) -> float:
    """Seconds left on an access token; a token without an expiry never needs refreshing for time's sake."""
    if expires_at is None:
        return float("inf")
    return (expires_at - datetime.now(UTC)).total_seconds()


class TokenRefresher:
    """Per process: concurrent callers refreshing the same instance share one ``refresh_instance``.

    The refresh runs as its own task: a caller that gives up (cancelled, timed out) does not cancel it, since a
    refresh abandoned after the provider rotated the token would lose the new one.
    """

    def __init__(self, db: Database, cipher: CredentialCipher, app: OAuthApp | None,
                 session_getter: Callable[[], aiohttp.ClientSession], *, min_validity_s: float = 60.0) -> None:
        self._db = db
        self._cipher = cipher
        self._app = app
        self._session_getter = session_getter
        self._min_validity_s = min_validity_s
        self._inflight: dict[uuid.UUID, asyncio.Task[dict[str, str]]] = {}

    @property
    def configured(self) -> bool:
        return self._app is not None

    async def refresh(self, instance_id: uuid.UUID, seen_access_token: str | None) -> dict[str, str]:
        task = self._inflight.get(instance_id)
        if task is None:
            if self._app is None:
                raise OAuthError("oauth_not_configured",
                                 "this service has no OAuth app configured, so its tokens cannot be refreshed")
            if len(self._inflight) >= MAX_INFLIGHT:
                raise TokenEndpointUnavailable("refresh_busy", "too many token refreshes in progress")
            task = asyncio.ensure_future(refresh_instance(
                self._db, self._cipher, self._app, self._session_getter(), instance_id,
                seen_access_token=seen_access_token, min_validity_s=self._min_validity_s))
            self._inflight[instance_id] = task
            task.add_done_callback(lambda t: self._done(instance_id, t))
        return await asyncio.shield(task)

    def _done(self, instance_id: uuid.UUID, task: asyncio.Task[dict[str, str]]) -> None:
        if self._inflight.get(instance_id) is task:
            del self._inflight[instance_id]
        if not task.cancelled():
            task.exception()  # retrieved here, so a refresh whose callers all left logs no "never retrieved"

    async def close(self) -> None:
        """Let refreshes in flight finish (their new tokens must be stored) before the process exits."""
        tasks = list(self._inflight.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
