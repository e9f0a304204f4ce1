"""The instance cache: busy instances are re-read in the background, lifetimes are jittered, and a
refresh never stores what an invalidation has made stale. A resolver on the test's own loop, a
real database, a clock the test moves."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from mcp.crypto import CredentialCipher, parse_key
from mcp.db import Database
from mcp.errors import Unavailable
from mcp.instances import InstanceResolver

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
    original = resolver._load

    async def counting_load(instance_id: uuid.UUID):  # type: ignore[no-untyped-def]
        loads.append(instance_id)
        return await original(instance_id)

    resolver._load = counting_load  # type: ignore[method-assign]
    return resolver, clock, loads


async def settle(resolver: InstanceResolver) -> None:
    while resolver._refreshing:
        await asyncio.gather(*resolver._refreshing.values(), return_exceptions=True)


def test_a_busy_instance_is_reread_in_the_background_while_the_cached_copy_answers(
        admin, database_url, credentials_key):
    inst = admin.create_instance(credentials={"api_key": "figd_old"})
    instance_id = uuid.UUID(inst["instance_id"])

    async def scenario() -> None:
        resolver, clock, loads = make_resolver(database_url, credentials_key)
        try:
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
            assert str(instance_id) in resolver._refreshing
            await settle(resolver)
            assert len(loads) == 2
            assert (await resolver.lookup(instance_id)).credentials == {"api_key": "figd_new"}
            assert len(loads) == 2  # the refresh stored what it read
        finally:
            await resolver.close()
            await resolver.db.close()

    asyncio.run(scenario())


def test_a_refresh_that_raced_with_an_invalidation_stores_nothing(admin, database_url, credentials_key):
    inst = admin.create_instance()
    instance_id = uuid.UUID(inst["instance_id"])

    async def scenario() -> None:
        resolver, clock, loads = make_resolver(database_url, credentials_key)
        try:
            await resolver.lookup(instance_id)
            counting = resolver._load

            async def invalidated_meanwhile(iid: uuid.UUID):  # type: ignore[no-untyped-def]
                found = await counting(iid)
                resolver.invalidate(iid)  # a NOTIFY arriving while the refresh's query ran
                return found

            resolver._load = invalidated_meanwhile  # type: ignore[method-assign]
            clock.t += 0.78 * TTL
            await resolver.lookup(instance_id)
            await settle(resolver)
            assert len(loads) == 2
            assert not resolver.is_cached(str(instance_id))
        finally:
            await resolver.close()
            await resolver.db.close()

    asyncio.run(scenario())


def test_a_failed_refresh_keeps_the_cached_copy_until_it_expires(admin, database_url, credentials_key):
    inst = admin.create_instance()
    instance_id = uuid.UUID(inst["instance_id"])

    async def scenario() -> None:
        resolver, clock, loads = make_resolver(database_url, credentials_key)
        try:
            await resolver.lookup(instance_id)

            async def database_down(iid: uuid.UUID):  # type: ignore[no-untyped-def]
                loads.append(iid)
                raise Unavailable("the database is unavailable; try again shortly", code="database_unavailable")

            resolver._load = database_down  # type: ignore[method-assign]
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
        finally:
            await resolver.close()
            await resolver.db.close()

    asyncio.run(scenario())


def test_lifetimes_are_jittered_so_a_warm_start_does_not_expire_all_at_once(database_url, credentials_key):
    async def scenario() -> None:
        resolver, clock, loads = make_resolver(database_url, credentials_key)
        try:
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
            assert not resolver._refreshing  # unknown ids are never refreshed in the background
        finally:
            await resolver.close()
            await resolver.db.close()

    asyncio.run(scenario())


def test_close_stops_refreshes_in_flight(admin, database_url, credentials_key):
    inst = admin.create_instance()
    instance_id = uuid.UUID(inst["instance_id"])

    async def scenario() -> None:
        resolver, clock, _ = make_resolver(database_url, credentials_key)
        try:
            await resolver.lookup(instance_id)
            started = asyncio.Event()

            async def slow(iid: uuid.UUID):  # type: ignore[no-untyped-def]
                started.set()
                await asyncio.sleep(30)

            resolver._load = slow  # type: ignore[method-assign]
            clock.t += 0.78 * TTL
            await resolver.lookup(instance_id)
            task = resolver._refreshing[str(instance_id)]
            await started.wait()
            await asyncio.wait_for(resolver.close(), 2)
            assert task.cancelled() and not resolver._refreshing
        finally:
            await resolver.db.close()

    asyncio.run(scenario())


def test_background_rereads_are_capped_and_the_rest_wait_for_a_later_use(admin, database_url, credentials_key):
    ids = [uuid.UUID(admin.create_instance(user=f"u{i}@example.com")["instance_id"]) for i in range(5)]

    async def scenario() -> None:
        resolver, clock, loads = make_resolver(database_url, credentials_key)
        try:
            for instance_id in ids:
                await resolver.lookup(instance_id)
            gate = asyncio.Event()
            counting = resolver._load

            async def held(iid: uuid.UUID):  # type: ignore[no-untyped-def]
                await gate.wait()
                return await counting(iid)

            resolver._load = held  # type: ignore[method-assign]
            clock.t += 0.78 * TTL
            for instance_id in ids:  # every one is due; all are answered from memory at once
                assert (await asyncio.wait_for(resolver.lookup(instance_id), 1)).id == instance_id
            assert len(resolver._refreshing) == resolver.MAX_REFRESHING == 2
            gate.set()
            await settle(resolver)
            assert len(loads) == 5 + 2
            for instance_id in ids:  # the next uses start the others, two at a time
                await resolver.lookup(instance_id)
                await settle(resolver)
            assert len(loads) == 5 + 5
        finally:
            await resolver.close()
            await resolver.db.close()

    asyncio.run(scenario())
