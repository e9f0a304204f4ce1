"""The per-instance upstream concurrency cap on its own: order, hand-over, cancellation, cleanup."""

from __future__ import annotations

import asyncio

import pytest

from mcp.server.limits import ConcurrencyLimiter


async def hold(limiter: ConcurrencyLimiter, key: str, log: list[str], name: str, gate: asyncio.Event) -> None:
    await limiter.acquire(key)
    try:
        log.append(name)
        await gate.wait()
    finally:
        limiter.release(key)


def test_waiters_get_slots_in_arrival_order_and_the_map_empties():
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(2)
        log: list[str] = []
        gate = asyncio.Event()
        tasks = [asyncio.create_task(hold(limiter, "a", log, f"a{i}", gate)) for i in range(5)]
        other = asyncio.create_task(hold(limiter, "b", log, "b0", gate))
        await asyncio.sleep(0.01)
        assert log == ["a0", "a1", "b0"]  # "b" is not held up by "a"'s queue
        assert limiter.active("a") == 2
        gate.set()
        await asyncio.gather(*tasks, other)
        assert log[3:] == ["a2", "a3", "a4"]
        assert limiter.active("a") == 0 and limiter._active == {} and limiter._waiters == {}

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_queue_and_takes_no_slot():
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(1)
        await limiter.acquire("a")
        waiting = asyncio.create_task(limiter.acquire("a"))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert limiter._waiters == {}
        limiter.release("a")
        assert limiter._active == {}
        await asyncio.wait_for(limiter.acquire("a"), 1)  # the slot is free again
        limiter.release("a")

    asyncio.run(scenario())


def test_a_waiter_cancelled_just_after_being_handed_a_slot_passes_it_on():
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(1)
        await limiter.acquire("a")
        first = asyncio.create_task(limiter.acquire("a"))
        second = asyncio.create_task(limiter.acquire("a"))
        await asyncio.sleep(0)
        limiter.release("a")  # hands the slot to `first`...
        first.cancel()  # ...which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(second, 1)  # the slot went on to `second`, not lost
        assert limiter.active("a") == 1
        limiter.release("a")
        assert limiter._active == {} and limiter._waiters == {}

    asyncio.run(scenario())


def test_a_limit_of_zero_means_no_limit():
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(0)
        for _ in range(100):
            await asyncio.wait_for(limiter.acquire("a"), 1)
        limiter.release("a")
        assert limiter._active == {}

    asyncio.run(scenario())


def test_a_waiter_past_its_deadline_gives_up_and_leaves_the_queue():
    async def scenario() -> None:
        limiter = ConcurrencyLimiter(1)
        await limiter.acquire("a")
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            await limiter.acquire("a", loop.time() + 0.05)
        assert limiter._waiters == {} and limiter.active("a") == 1
        limiter.release("a")
        assert limiter._active == {}
        await limiter.acquire("a", loop.time() + 1)  # a free slot is taken at once, deadline or not
        limiter.release("a")

    asyncio.run(scenario())
