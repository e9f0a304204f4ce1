"""Instance resolution: URL segment -> active instance of this service -> decrypted credentials.

Order (each step's failure is the answer): the segment must be a UUID (400) -> the instance must
exist for this service (404) -> it must be active and not expired (403, saying which) -> its
credentials are decrypted. Lookups are cached for about ``ttl_s`` keyed by instance id;
``invalidate`` drops an entry at once (every process is told of changes by LISTEN/NOTIFY, so the
TTL is only the backstop). Expiry is checked against the clock on every request, so an instance
expires on time even when served from the cache.

A cached instance used in the last quarter of its lifetime is re-read in the background while the
cached copy answers, so a busy instance never waits for the database; each entry's lifetime is
jittered so entries loaded together (after a start) do not all expire together.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mcp.errors import BadRequest, Forbidden, NotFound, PlatformError, Unavailable
from mcp.tasks import cancel_and_wait
from mcp.tenancy.credentials import CredentialCipher, DecryptionError
from mcp.tenancy.database import Database

log = logging.getLogger(__name__)

# The canonical 8-4-4-4-12 form only (either case): no braces, "urn:uuid:" or missing hyphens.
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_INSTANCES_SQL = """
SELECT id, service_name, status, expires_at, credentials_enc, token_expires_at, tool_policy
FROM service_instances WHERE id = ANY(%s) AND service_name = %s
"""


# Statuses that only connecting the account (again) ends, and the error code a call to such an instance gets.
RECONNECT_CODES = {"pending": "instance_pending", "reauth_required": "instance_reauth_required"}


def reconnect_message(service: str, status: str) -> str:
    """What to tell whoever calls an instance whose account is not (or no longer) connected."""
    how = (f'POST /api/connect {{"service": "{service}", "user": <its user>, "instance_id": <this instance\'s id>}} '
           "on the main API, then open the authorize_url it returns")
    if status == "pending":
        return f"this instance's {service} account is not connected yet; connect it: {how}"
    return (f"this instance's {service} authorization was revoked or has expired and could not be renewed; "
            f"reconnect it (same id, same URL): {how}")


@dataclass(frozen=True)
class Instance:
    id: uuid.UUID
    service: str
    status: str
    expires_at: datetime | None
    credentials: dict[str, str]
    # When the access token dies (OAuth instances that expire); None: it does not.
    token_expires_at: datetime | None = None
    # {"allow": [names]} or {"read_only": true} as stored; None: every tool of the service.
    tool_policy: dict[str, Any] | None = None
    # str(id): the key per-instance state (cache, rate and concurrency limits) is kept under; a
    # str hashes once, a UUID's hash is computed in Python every time.
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", str(self.id))

    def is_expired(self, now: datetime) -> bool:
        return self.status == "expired" or (self.expires_at is not None and self.expires_at <= now)

    def effective_status(self, now: datetime) -> str:
        return "expired" if self.is_expired(now) else self.status

    def public(self, now: datetime) -> dict[str, Any]:
        """What may be shown to whoever holds the instance URL: never the credentials."""
        status = self.effective_status(now)
        info: dict[str, Any] = {
            "id": str(self.id),
            "service": self.service,
            "status": status,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }
        if status in RECONNECT_CODES:
            info["message"] = reconnect_message(self.service, status)
        return info


def instance_key(segment: str) -> str:
    """The canonical (lower-case) id string of a URL segment; BadRequest unless it is a UUID."""
    if not isinstance(segment, str) or _CANONICAL_UUID.fullmatch(segment) is None:
        raise BadRequest("the instance id in the URL must be a UUID", code="invalid_instance_id")
    return segment.lower()


def parse_instance_id(segment: str) -> uuid.UUID:
    """The instance id from a URL segment; BadRequest unless it is a canonical UUID."""
    return uuid.UUID(instance_key(segment))


class InstanceResolver:
    """Resolves instances of one service, with a short-lived cache.

    ``clock`` (monotonic seconds) and ``now`` (aware wall time) are attributes so tests can swap them.
    """

    # Refresh in the background once an entry has lived this share of its lifetime.
    REFRESH_AFTER = 0.75
    # Lifetimes are drawn from [1 - JITTER, 1] x ttl_s.
    JITTER = 0.2
    # Entries come due together (those loaded together after a start): one background task re-reads
    # the due ones, this many per query. One at a time per entry, a wave of 1,000 cost 160-210 us of
    # CPU each and opened every pooled connection at once (+6 MB RSS).
    REFRESH_BATCH = 100

    def __init__(self, db: Database, cipher: CredentialCipher, service: str, ttl_s: float = 60.0) -> None:
        self.db = db
        self.cipher = cipher
        self.service = service
        self.ttl_s = ttl_s
        self.clock: Callable[[], float] = time.monotonic
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._random = random.Random()
        # str(id) -> (refresh after, expires at, instance or None for "no such instance")
        self._cache: dict[str, tuple[float, float, Instance | None]] = {}
        # Entries waiting for the background re-read (str(id) -> id), and the task doing it.
        self._due: dict[str, uuid.UUID] = {}
        self._refresher: asyncio.Task[None] | None = None
        # Bumped by every invalidation: a lookup that raced with one must not cache what it read.
        self._generation = 0

    def invalidate(self, instance_id: uuid.UUID | None = None) -> None:
        """Forget one instance (or all of them) so the next request reads the database."""
        self._generation += 1
        if instance_id is None:
            self._cache.clear()
        else:
            self._cache.pop(str(instance_id), None)

    def is_cached(self, segment: str) -> bool:
        """Whether a lookup of this URL segment would be answered from memory."""
        try:
            key = instance_key(segment)
        except BadRequest:
            return False
        hit = self._cache.get(key)
        return hit is not None and hit[1] > self.clock()

    def cached(self, key: str) -> tuple[bool, Instance | None]:
        """(True, the instance or None) when memory can answer for ``str(id)``, else (False, None); never waits."""
        hit = self._cache.get(key)
        if hit is None:
            return False, None
        now = self.clock()
        if hit[1] <= now:
            return False, None
        if hit[0] <= now and hit[2] is not None and key not in self._due:
            self._due[key] = hit[2].id
            if self._refresher is None:
                self._refresher = asyncio.get_running_loop().create_task(self._refresh_due(),
                                                                         name="instance-refresh")
        return True, hit[2]

    async def lookup(self, instance_id: uuid.UUID) -> Instance | None:
        """The instance whatever its status, or None if this service has no such instance."""
        return await self._lookup(str(instance_id), instance_id)

    async def reload(self, instance_id: uuid.UUID) -> Instance | None:
        """The instance as the database has it now, cached in place of the old copy (after this process
        changed it, e.g. refreshed its token: the next request need not wait for the NOTIFY)."""
        self.invalidate(instance_id)
        return await self.lookup(instance_id)

    async def _lookup(self, key: str, instance_id: uuid.UUID | None = None) -> Instance | None:
        found, instance = self.cached(key)
        if found:
            return instance
        instance_id = instance_id if instance_id is not None else uuid.UUID(key)
        if instance_id.version != 4:
            return None  # every instance id is a random (version 4) UUID: no need to ask the database
        generation = self._generation
        loaded_at = self.clock()
        instance = await self._load(instance_id)
        self._store(key, instance, generation, loaded_at)
        return instance

    def _store(self, key: str, instance: Instance | None, generation: int, loaded_at: float) -> None:
        if generation != self._generation:
            return
        if len(self._cache) > 100_000:
            self._cache.clear()
        life = self.ttl_s * (1.0 - self.JITTER * self._random.random())
        self._cache[key] = (loaded_at + life * self.REFRESH_AFTER, loaded_at + life, instance)

    async def _refresh_due(self) -> None:
        """Re-read every due entry, ``REFRESH_BATCH`` per query, until none is left."""
        try:
            while self._due:
                batch = dict(itertools.islice(self._due.items(), self.REFRESH_BATCH))
                generation = self._generation
                loaded_at = self.clock()
                try:
                    found, unreadable = await self._load_many(list(batch.values()))
                except PlatformError:
                    found, unreadable = {}, set(batch.values())  # the cached copies answer until they expire
                for key, instance_id in batch.items():
                    del self._due[key]
                    if instance_id not in unreadable:  # an unreadable one fails its next request, not here
                        self._store(key, found.get(instance_id), generation, loaded_at)
        finally:
            self._refresher = None

    async def close(self) -> None:
        """Stop background refreshes (at shutdown)."""
        await cancel_and_wait(self._refresher)
        self._refresher = None
        self._due.clear()

    def resolve_cached(self, segment: str) -> Instance | None:
        """What ``resolve`` answers when memory can answer (the instance, or its error raised), else
        None: then ``resolve`` must wait for the database."""
        found, instance = self.cached(instance_key(segment))
        return self._admit(instance) if found else None

    async def resolve(self, segment: str) -> Instance:
        """An active, unexpired instance, or the PlatformError that says why not."""
        key = instance_key(segment)
        found, instance = self.cached(key)
        if not found:
            instance = await self._lookup(key)
        return self._admit(instance)

    def _admit(self, instance: Instance | None) -> Instance:
        if instance is None:
            raise NotFound(f"no {self.service} instance with this id", code="instance_not_found")
        if instance.status == "active" and (instance.expires_at is None or instance.expires_at > self.now()):
            return instance
        status = instance.effective_status(self.now())
        if status == "expired":
            raise Forbidden("this instance has expired; renew it through the main API", code="instance_expired")
        if status in RECONNECT_CODES:
            raise Forbidden(reconnect_message(self.service, status), code=RECONNECT_CODES[status])
        raise Forbidden(f"this instance is {status}; reactivate it through the main API", code="instance_inactive")

    async def _load(self, instance_id: uuid.UUID) -> Instance | None:
        found, unreadable = await self._load_many([instance_id])
        if unreadable:
            # The operator's problem (key missing or rotated away), not the client's: say so without detail.
            raise Unavailable(
                "this instance's credentials cannot be read by the server; the operator has been alerted",
                code="credentials_unreadable", retry_after=60,
            )
        return found.get(instance_id)

    async def _load_many(self, ids: list[uuid.UUID]) -> tuple[dict[uuid.UUID, Instance], set[uuid.UUID]]:
        """The instances found among ``ids``, and the ids whose credentials could not be decrypted."""
        async with self.db.connection() as conn:
            cur = await conn.execute(_INSTANCES_SQL, (ids, self.service))
            rows = await cur.fetchall()
        found: dict[uuid.UUID, Instance] = {}
        unreadable: set[uuid.UUID] = set()
        for row in rows:
            try:
                found[row["id"]] = self._instance(row)
            except DecryptionError:
                unreadable.add(row["id"])
        return found, unreadable

    def _instance(self, row: dict[str, Any]) -> Instance:
        try:
            credentials = self.cipher.decrypt(row["id"], row["credentials_enc"])
        except DecryptionError as e:
            log.error("cannot decrypt credentials of a %s instance: %s", self.service, e)
            raise
        return Instance(
            id=row["id"],
            service=row["service_name"],
            status=row["status"],
            expires_at=row["expires_at"],
            credentials=credentials,
            token_expires_at=row["token_expires_at"],
            tool_policy=row["tool_policy"],
        )
