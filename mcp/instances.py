"""Instance resolution: URL segment -> active instance of this service -> decrypted credentials.

Order (each step's failure is the answer): the segment must be a UUID (400) -> the instance must
exist for this service (404) -> it must be active and not expired (403, saying which) -> its
credentials are decrypted. Lookups are cached for ``ttl_s`` keyed by (service, instance id);
``invalidate`` drops an entry at once. Expiry is checked against the clock on every request, so
an instance expires on time even when served from the cache.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mcp.crypto import CredentialCipher, DecryptionError
from mcp.db import Database
from mcp.errors import BadRequest, Forbidden, NotFound, Unavailable

log = logging.getLogger(__name__)

_INSTANCE_SQL = """
SELECT id, service_name, status, expires_at, credentials_enc
FROM service_instances WHERE id = %s AND service_name = %s
"""


@dataclass(frozen=True)
class Instance:
    id: uuid.UUID
    service: str
    status: str
    expires_at: datetime | None
    credentials: dict[str, str]

    def is_expired(self, now: datetime) -> bool:
        return self.status == "expired" or (self.expires_at is not None and self.expires_at <= now)

    def effective_status(self, now: datetime) -> str:
        return "expired" if self.is_expired(now) else self.status

    def public(self, now: datetime) -> dict[str, Any]:
        """What may be shown to whoever holds the instance URL: never the credentials."""
        return {
            "id": str(self.id),
            "service": self.service,
            "status": self.effective_status(now),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


def parse_instance_id(segment: str) -> uuid.UUID:
    """The instance id from a URL segment; BadRequest unless it is a canonical UUID."""
    try:
        value = uuid.UUID(segment)
    except (ValueError, TypeError, AttributeError):
        raise BadRequest("the instance id in the URL must be a UUID", code="invalid_instance_id") from None
    if str(value) != segment.lower():
        raise BadRequest("the instance id in the URL must be a UUID", code="invalid_instance_id")
    return value


class InstanceResolver:
    """Resolves instances of one service, with a short-lived cache.

    ``clock`` (monotonic seconds) and ``now`` (aware wall time) are attributes so tests can swap them.
    """

    def __init__(self, db: Database, cipher: CredentialCipher, service: str, ttl_s: float = 5.0) -> None:
        self.db = db
        self.cipher = cipher
        self.service = service
        self.ttl_s = ttl_s
        self.clock: Callable[[], float] = time.monotonic
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._cache: dict[uuid.UUID, tuple[float, Instance | None]] = {}
        # Bumped by every invalidation: a lookup that raced with one must not cache what it read.
        self._generation = 0

    def invalidate(self, instance_id: uuid.UUID | None = None) -> None:
        """Forget one instance (or all of them) so the next request reads the database."""
        self._generation += 1
        if instance_id is None:
            self._cache.clear()
        else:
            self._cache.pop(instance_id, None)

    def is_cached(self, segment: str) -> bool:
        """Whether a lookup of this URL segment would be answered from memory."""
        try:
            instance_id = parse_instance_id(segment)
        except BadRequest:
            return False
        hit = self._cache.get(instance_id)
        return hit is not None and hit[0] > self.clock()

    async def lookup(self, instance_id: uuid.UUID) -> Instance | None:
        """The instance whatever its status, or None if this service has no such instance."""
        if instance_id.version != 4:
            return None  # every instance id is a random (version 4) UUID: no need to ask the database
        hit = self._cache.get(instance_id)
        now = self.clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        instance = await self._load(instance_id)
        if generation == self._generation:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[instance_id] = (now + self.ttl_s, instance)
        return instance

    async def resolve(self, segment: str) -> Instance:
        """An active, unexpired instance, or the PlatformError that says why not."""
        instance_id = parse_instance_id(segment)
        instance = await self.lookup(instance_id)
        if instance is None:
            raise NotFound(f"no {self.service} instance with this id", code="instance_not_found")
        status = instance.effective_status(self.now())
        if status == "expired":
            raise Forbidden("this instance has expired; renew it through the main API", code="instance_expired")
        if status != "active":
            raise Forbidden(f"this instance is {status}; reactivate it through the main API",
                            code="instance_inactive")
        return instance

    async def _load(self, instance_id: uuid.UUID) -> Instance | None:
        async with self.db.connection() as conn:
            cur = await conn.execute(_INSTANCE_SQL, (instance_id, self.service))
            row = await cur.fetchone()
        if row is None:
            return None
        try:
            credentials = self.cipher.decrypt(instance_id, row["credentials_enc"])
        except DecryptionError as e:
            # The operator's problem (key missing or rotated away), not the client's: say so without detail.
            log.error("cannot decrypt credentials of a %s instance: %s", self.service, e)
            raise Unavailable(
                "this instance's credentials cannot be read by the server; the operator has been alerted",
                code="credentials_unreadable", retry_after=60,
            ) from None
        return Instance(
            id=instance_id,
            service=row["service_name"],
            status=row["status"],
            expires_at=row["expires_at"],
            credentials=credentials,
        )
