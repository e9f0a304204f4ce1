"""The API's background job: refresh tokens of idle instances before their refresh token dies.

A service process refreshes an instance's tokens when a call needs it, which also renews the refresh token
where the provider rotates it. An instance nobody calls would lose its grant when the refresh token itself
expires (GitHub: 6 months after it was issued), so every ``interval_s`` this job refreshes each active instance
whose ``refresh_expires_at`` falls within ``window_s``. The default window, a day, is far shorter than any
refresh token's life (so the extra refreshes are rare: once per token life at most) and long enough to ride out
a day of token-endpoint outages, retried every interval.

The refresh itself is ``mcp.oauth.refresh.refresh_instance``, the protocol every process uses: the row lock
serializes it with a service process refreshing the same instance, and the access token read here is the
``seen_access_token``, so an instance someone else refreshed meanwhile is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from mcp.config import ConfigError, Settings
from mcp.oauth.client import OAuthError, ReauthRequired, TokenEndpointUnavailable
from mcp.oauth.refresh import refresh_instance
from mcp.tenancy.credentials import CredentialCipher, DecryptionError
from mcp.tenancy.database import Database
from services.api import store
from services.api.oauth_apps import OAuthApps

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0
DEFAULT_WINDOW_S = 86_400.0
# Instances handled per pass; more wait for the next pass (due ones are taken soonest-expiring first).
BATCH = 200


@dataclass(frozen=True)
class KeeperSettings:
    interval_s: float = DEFAULT_INTERVAL_S
    window_s: float = DEFAULT_WINDOW_S

    @classmethod
    def from_settings(cls, settings: Settings) -> KeeperSettings:
        """``OAUTH_REFRESH_INTERVAL`` (seconds between passes) and ``OAUTH_REFRESH_WINDOW`` (seconds ahead)."""
        return cls(interval_s=_seconds(settings, "OAUTH_REFRESH_INTERVAL", DEFAULT_INTERVAL_S),
                   window_s=_seconds(settings, "OAUTH_REFRESH_WINDOW", DEFAULT_WINDOW_S))


def _seconds(settings: Settings, name: str, default: float) -> float:
    raw = settings.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a number of seconds greater than 0")
    return value


@dataclass
class PassResult:
    refreshed: int = 0
    reauth_required: int = 0
    failed: int = 0


class TokenKeeper:
    def __init__(self, db: Database, cipher: CredentialCipher, apps: OAuthApps,
                 session_getter: Callable[[], aiohttp.ClientSession], settings: KeeperSettings) -> None:
        self._db = db
        self._cipher = cipher
        self._apps = apps
        self._session_getter = session_getter
        self.settings = settings
        self._task: asyncio.Task[None] | None = None
        self._unconfigured_said: set[str] = set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="oauth-token-keeper")

    async def stop(self) -> None:
        """Stop between passes or cancel one in progress: a refresh cut short rolls back, its token unsent or
        its instance refreshed again by whoever needs it next (the row lock keeps that to one refresh)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            # Waiting first keeps a starting process quiet (and off a database that may still be coming up).
            await asyncio.sleep(self.settings.interval_s)
            try:
                result = await self.run_once()
                if result.refreshed or result.reauth_required or result.failed:
                    log.info("refresh tokens kept alive: %d refreshed, %d need reconnecting, %d to retry",
                             result.refreshed, result.reauth_required, result.failed)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the database may be down: try again next time
                log.warning("token keeper pass failed: %s", type(e).__name__)

    async def run_once(self) -> PassResult:
        """One pass: refresh every due instance; what happened, counted."""
        result = PassResult()
        async with self._db.connection() as conn:
            due = await store.refresh_due(conn, self.settings.window_s, BATCH)
            apps = {s: await self._apps.get(conn, s) for s in {r["service"] for r in due}}
        for row in due:
            oauth = apps.get(row["service"])
            if oauth is None or oauth.app is None:
                if row["service"] not in self._unconfigured_said:
                    self._unconfigured_said.add(row["service"])
                    log.warning("%s refresh tokens are about to expire but its OAuth app is not configured",
                                row["service"])
                result.failed += 1
                continue
            outcome = await self._refresh(oauth.app, row["id"], row["credentials_enc"])
            setattr(result, outcome, getattr(result, outcome) + 1)
        return result

    async def _refresh(self, app: Any, instance_id: uuid.UUID, credentials_enc: str) -> str:
        service = app.provider.service
        try:
            seen = self._cipher.decrypt(instance_id, credentials_enc).get("access_token")
        except DecryptionError:
            log.warning("%s instance's credentials cannot be decrypted; not refreshed", service)
            return "failed"
        try:
            await refresh_instance(self._db, self._cipher, app, self._session_getter(), instance_id,
                                   seen_access_token=seen)
        except ReauthRequired:
            return "reauth_required"  # refresh_instance set the status and logged it
        except TokenEndpointUnavailable as e:
            log.info("%s token endpoint unavailable (%s); retrying on the next pass", service, e.code)
            return "failed"
        except OAuthError as e:
            log.warning("%s instance not refreshed: %s", service, e.code)
            return "failed"
        return "refreshed"
