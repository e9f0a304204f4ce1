"""The instance cache: busy instances are re-read in the background, lifetimes are jittered, and a
refresh never stores what an invalidation has made stale. A resolver on the test's own loop, a
real database, a clock the test moves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mcp.errors import Unavailable
from mcp.tenancy.credentials import CredentialCipher, parse_key
from mcp.tenancy.database import Database
from mcp.tenancy.instances import InstanceResolver

TTL = 100.0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_resolver(database_url: str, credentials_key: str) -> tuple[InstanceResolver, Clock, list[uuid.UUID]]:
    db = Database(database_url, Path("/nonexistent"), timeout_s=2.0, max_size=2)
    resolver = InstanceResolver(db, CredentialCipher([parse_key(credentials_key)]), "figma", ttl_s=TTL)
    clock = Clock()
    resolver.clock = clock
    loads: list[uuid.UUID] = []
    original = resolver._load_many  # every read of the database, a request's or a background re-read

    async def counting_load_many(ids: list[uuid.UUID]):  # type: ignore[no-untyped-def]
        loads.extend(ids)
        return await original(ids)

    resolver._load_many = counting_load_many  # type: ignore[method-assign]
    return resolver, clock, loads


def run(database_url: str, credentials_key: str, scenario: Callable[..., Awaitable[None]]) -> None:
    """``scenario(resolver, clock, loads)`` on a fresh resolver, closed (and its pool) afterwards."""
    async def main() -> None:
        resolver, clock, loads = make_resolver(database_url, credentials_key)
        try:
            await scenario(resolver, clock, loads)
        finally:
            await resolver.close()
            await resolver.db.close()

    asyncio.run(main())


async def settle(resolver: InstanceResolver) -> None:
    while resolver._refresher is not None:
        await asyncio.gather(resolver._refresher, return_exceptions=True)


def test_a_busy_instance_is_reread_in_the_background_while_the_cached_copy_answers(
        admin, database_url, credentials_key):
    inst = admin.create_instance(credentials={"api_key": "figd_old"})
    instance_id = uuid.UUID(inst["instance_id"])

    async def scenario(resolver: InstanceResolver, clock: Clock, loads: list[uuid.UUID]) -> None:
        assert (await resolver.lookup(instance_id)).credentials == {"api_key": "figd_old"}
        assert len(loads) == 1
        clock.t += 0.5 * TTL  # before any refresh point (at least 0.6 x TTL)
        await resolver.lookup(instance_id)
        await settle(resolver)
        assert len(loads) == 1
        # Changed behind the resolver's back (it has no listener here): only a re-read can see it.
        assert admin("PATCH", f"/api/instances/{instance_id}",
                     {"credentials": {"api_key": "figd_new"}}).status == 200
        clock.t += 0.28 * TTL  # 0.78 x TTL: past the refresh point, before expiry (at least 0.8 x TTL)
        served = await resolver.lookup(instance_id)
        assert served.credentials == {"api_key": "figd_old"}  # answered from memory, no waiting
        assert str(instance_id) in resolver._due
        await settle(resolver)
        assert len(loads) == 2
        assert (await resolver.lookup(instance_id)).credentials == {"api_key": "figd_new"}
        assert len(loads) == 2  # the refresh stored what it read

    run(database_url, credentials_key, scenario)


def test_a_refresh_that_raced_with_an_invalidation_stores_nothing(admin, database_url, credentials_key):
    inst = admin.create_instance()
    instance_id = uuid.UUID(inst["instance_id"])

    async def scenario(resolver: InstanceResolver, clock: Clock, loads: list[uuid.UUID]) -> None:
        await resolver.lookup(instance_id)
        counting = resolver._load_many

        async def invalidated_meanwhile(ids: list[uuid.UUID]):  # type: ignore[no-untyped-def]
            found = await counting(ids)
            resolver.invalidate(ids[0])  # a NOTIFY arriving while the refresh's query ran
            return found

        resolver._load_many = invalidated_meanwhile  # type: ignore[method-assign]
        clock.t += 0.78 * TTL
        await resolver.lookup(instance_id)
        await settle(resolver)
        assert len(loads) == 2
        assert not resolver.is_cached(str(instance_id))

    run(database_url, credentials_key, scenario)


def test_a_failed_refresh_keeps_the_cached_copy_until_it_expires(admin, database_url, credentials_key):
    inst = admin.create_instance()
    instance_id = uuid.UUID(inst["instance_id"])

    async def scenario(resolver: InstanceResolver, clock: Clock, loads: list[uuid.UUID]) -> None:
        await resolver.lookup(instance_id)

        async def database_down(ids: list[uuid.UUID]):  # type: ignore[no-untyped-def]
            loads.extend(ids)
            raise Unavailable("the database is unavailable; try again shortly", code="database_unavailable")

        resolver._load_many = database_down  # type: ignore[method-assign]
        clock.t += 0.78 * TTL
        assert (await resolver.lookup(instance_id)).id == instance_id
        await settle(resolver)
        assert len(loads) == 2
        assert (await resolver.lookup(instance_id)).id == instance_id  # still served, refresh tried again
        await settle(resolver)
        assert len(loads) == 3
        clock.t += TTL  # past any lifetime: now the request itself must wait for (and fail on) the database
        with pytest.raises(Unavailable):
            await resolver.lookup(instance_id)

    run(database_url, credentials_key, scenario)


def test_lifetimes_are_jittered_so_a_warm_start_does_not_expire_all_at_once(database_url, credentials_key):
    async def scenario(resolver: InstanceResolver, clock: Clock, loads: list[uuid.UUID]) -> None:
        ids = [uuid.uuid4() for _ in range(200)]
        for instance_id in ids:  # unknown ids: cached as "no such instance", the same lifetimes
            assert await resolver.lookup(instance_id) is None
        assert len(loads) == 200
        clock.t += 0.79 * TTL
        for instance_id in ids:
            await resolver.lookup(instance_id)
        assert len(loads) == 200  # nothing has expired before 0.8 x TTL
        clock.t += 0.11 * TTL  # 0.9 x TTL: about half have expired
        for instance_id in ids:
            await resolver.lookup(instance_id)
        assert 40 < len(loads) - 200 < 160
        clock.t += 0.1 * TTL + 0.001  # past TTL: every one of the rest
        for instance_id in ids:
            await resolver.lookup(instance_id)
        assert len(loads) == 400
        assert not resolver._due and resolver._refresher is None  # unknown ids are never re-read early

    run(database_url, credentials_key, scenario)


def test_close_stops_refreshes_in_flight(admin, database_url, credentials_key):
    inst = admin.create_instance()
    instance_id = uuid.UUID(inst["instance_id"])

    async def scenario(resolver: InstanceResolver, clock: Clock, _loads: list[uuid.UUID]) -> None:
        await resolver.lookup(instance_id)
        started = asyncio.Event()

        async def slow(ids: list[uuid.UUID]):  # type: ignore[no-untyped-def]
            started.set()
            await asyncio.sleep(30)

        resolver._load_many = slow  # type: ignore[method-assign]
        clock.t += 0.78 * TTL
        await resolver.lookup(instance_id)
        task = resolver._refresher
        assert task is not None
        await started.wait()
        await asyncio.wait_for(resolver.close(), 2)
        assert task.cancelled() and not resolver._due and resolver._refresher is None

    run(database_url, credentials_key, scenario)


def test_due_entries_are_reread_together_a_batch_per_query(admin, database_url, credentials_key):
    ids = [uuid.UUID(admin.create_instance(user=f"u{i}@example.com")["instance_id"]) for i in range(5)]
    gone = ids[4]

    async def scenario(resolver: InstanceResolver, clock: Clock, loads: list[uuid.UUID]) -> None:
        resolver.REFRESH_BATCH = 2
        queries: list[list[uuid.UUID]] = []
        counting = resolver._load_many

        async def recording(batch: list[uuid.UUID]):  # type: ignore[no-untyped-def]
            queries.append(list(batch))
            return await counting(batch)

        for instance_id in ids:
            await resolver.lookup(instance_id)
        resolver._load_many = recording  # type: ignore[method-assign]
        assert admin("DELETE", f"/api/instances/{gone}").status == 204  # unseen: no listener here
        clock.t += 0.78 * TTL
        for instance_id in ids:  # every one is due; all are answered from memory, without waiting
            assert (await resolver.lookup(instance_id)).id == instance_id
        assert len(resolver._due) == 5 and resolver._refresher is not None
        await settle(resolver)
        assert queries == [ids[0:2], ids[2:4], ids[4:5]]  # one task, two per query, in order
        assert len(loads) == 5 + 5
        for instance_id in ids[:4]:  # re-read: fresh lifetimes, nothing more to load
            assert (await resolver.lookup(instance_id)).id == instance_id
        assert await resolver.lookup(gone) is None  # the re-read found it deleted
        assert len(loads) == 10

    run(database_url, credentials_key, scenario)
