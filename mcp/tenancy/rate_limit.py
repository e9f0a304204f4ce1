"""The per-instance rate limit shared by every process and host: leases from the buckets in PostgreSQL.

Each instance has one token bucket in ``rate_buckets`` (mcp/tenancy/rate_buckets.py). A process never asks the
database on a call's path while it holds tokens for the instance: it leases them in small chunks, spends them
from memory, and asks for more before they run out. One statement settles all that changed: chunks asked for,
leases that went unspent for ``lease_s`` handed back, calls admitted on credit charged. It runs every
``settle_s``, or one ``tick_s`` after a call started waiting (the only case where a call waits for it).

- A process without tokens for an instance admits up to ``credit`` calls at once and charges them with the next
  statement, so an instance's first call is not a round trip either; the bucket may go below zero (debt that
  the refill pays off first).
- Only a call that finds no tokens and no credit left waits for the next statement (one tick plus a round trip):
  it is admitted with the tokens granted, or refused with the seconds until the bucket has a token again.
- Bound: in any window of t seconds an instance is admitted at most burst + rate * (t + 2 * (lease_s + settle_s))
  + processes * credit calls, wherever they land. Tokens come only out of the one bucket and credit is charged
  to it (a process has at most ``credit`` calls not yet charged per instance); tokens unspent ``lease_s`` after
  their grant are no longer spent (they go back later), so the tokens a process can still spend while the bucket
  refills are at most what it refills in that time.
- If the database cannot be reached (or the statement fails), every process falls back to its own bucket (the
  ``local`` limiter; with N processes an instance may then get N times its rate), logged once; the shared limit
  resumes with the first statement that succeeds. Nobody is refused for the outage and nothing becomes a 500.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Protocol

from mcp.tasks import cancel_and_wait
from mcp.tenancy.rate_buckets import RateBuckets, Settled

log = logging.getLogger(__name__)

# How often an idle process retries the database after a failed statement, and deletes long-full buckets.
_PROBE_EVERY_S = 1.0
_COLLECT_EVERY_S = 60.0
# Seconds at most before expired leases' tokens go back to the bucket when nothing else needs a statement.
_RETURN_EVERY_S = 5.0
# Seconds an empty lease is kept without use (it remembers when the bucket has tokens again).
_FORGET_AFTER_S = 10.0


class LocalLimiter(Protocol):
    def acquire(self, key: Hashable, cost: float = 1.0) -> int: ...


class _Lease:
    """This process's share of one instance's bucket."""

    __slots__ = ("key", "tokens", "low", "debt", "sent_debt", "giving", "queued", "waiters", "empty_until",
                 "expires", "mark", "touched")

    def __init__(self, key: str, now: float) -> None:
        self.key = key
        self.tokens = 0  # leased, spendable now
        self.low = 1  # fewer left than this: ask for more (half the last grant)
        self.debt = 0  # admitted on credit, to be charged with the next statement
        self.sent_debt = 0  # charged by the statement in flight
        self.giving = 0  # tokens handed back with the next statement
        self.queued = False  # in the next statement
        self.waiters: deque[asyncio.Future[int]] = deque()
        self.empty_until = 0.0  # the bucket was empty when last asked: no credit before this
        self.expires = 0.0  # unspent tokens go back after this
        self.mark = 0  # tokens right after the last grant (what was spent since tells what to ask for)
        self.touched = now


class SharedRateLimiter:
    """``acquire(key)``: 0 to go ahead, the seconds to wait when refused, or an awaitable of either.

    With ``shared`` False (RATE_LIMIT_SCOPE=process) every call goes to ``local`` and the database is never asked.
    """

    def __init__(self, buckets: RateBuckets, local: LocalLimiter, *, shared: bool = True, credit: int = 2,
                 tick_s: float = 0.05, settle_s: float = 1.0, lease_s: float = 1.0, timeout_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.buckets = buckets
        self.rate = buckets.rate
        self.local = local
        self.credit = credit
        self.tick_s = tick_s
        self.settle_s = settle_s
        self.lease_s = lease_s
        self.timeout_s = timeout_s
        self.clock = clock
        # Enough for lease_s at the full rate; refilling on a half-spent chunk keeps a busy instance from waiting.
        self.chunk = max(1, min(math.ceil(buckets.burst), math.ceil(self.rate * lease_s)))
        self._max_chunk = max(self.chunk, math.ceil(buckets.burst))
        self._leases: dict[str, _Lease] = {}
        self._queued: list[_Lease] = []
        self._giving: list[_Lease] = []  # expired leases whose tokens go back with the next statement
        self._wake = asyncio.Event()  # set when a call waits (or the settler sleeps with nothing to do)
        self._idle = True
        self._task: asyncio.Task[None] | None = None
        self.degraded = False
        self.shared = shared and self.rate > 0
        self._shared = self.shared  # False: every call goes to the local limiter (process scope, or degraded)

    def acquire(self, key: str) -> int | Awaitable[int]:
        """The call path: a dictionary lookup and a decrement while the lease lasts."""
        if not self._shared:
            return self.local.acquire(key)
        lease = self._leases.get(key)
        if lease is not None and lease.tokens:
            lease.tokens -= 1
            if lease.tokens < lease.low and not lease.queued:
                self._queue(lease)
            return 0
        return self._acquire_without_tokens(key, lease)

    def _acquire_without_tokens(self, key: str, lease: _Lease | None) -> int | Awaitable[int]:
        now = self.clock()
        if lease is None:
            lease = self._leases[key] = _Lease(key, now)
        lease.touched = now
        if lease.empty_until > now:
            return max(1, math.ceil(lease.empty_until - now))
        if lease.debt + lease.sent_debt < self.credit and not lease.waiters:
            lease.debt += 1
            if not lease.queued:
                self._queue(lease)
            # Settle within a tick, not at the next second: the credit covers the calls until the grant arrives,
            # so an instance well below its limit never has a call wait for the database.
            self._wake.set()
            return 0
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        lease.waiters.append(waiter)
        if not lease.queued:
            self._queue(lease)
        self._wake.set()
        return waiter

    def _queue(self, lease: _Lease) -> None:
        lease.queued = True
        self._queued.append(lease)
        if self._task is None:
            self.start()
        if self._idle or lease.waiters:
            self._wake.set()

    def start(self) -> None:
        """Start the settling task; must run in the serving process's loop (the first lease starts it too)."""
        if self._task is None and self.shared:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rate-limit-settle")

    async def _run(self) -> None:
        next_collect = self.clock() + random.uniform(0, _COLLECT_EVERY_S)
        next_return = 0.0
        while True:
            try:
                timeout = _PROBE_EVERY_S if self.degraded else (self.settle_s if self._leases else None)
                self._idle = timeout is None
                try:
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._idle = False
                if self._wake.is_set():
                    self._wake.clear()
                    await asyncio.sleep(self.tick_s)  # a tick's worth of waiting calls go in one statement
                now = self.clock()
                self._expire(now)
                if self._queued or self.degraded or (self._giving and now >= next_return):
                    next_return = now + _RETURN_EVERY_S
                    await self._settle()
                if now >= next_collect and not self.degraded:
                    next_collect = now + _COLLECT_EVERY_S * random.uniform(0.8, 1.2)
                    await self._collect()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the rate-limit settler failed; retrying")

    def _expire(self, now: float) -> None:
        """Hand back leases unspent for lease_s; forget empty leases nobody has used for a while."""
        forget: list[str] = []
        for key, lease in self._leases.items():
            if lease.tokens and lease.expires <= now:
                # No longer spendable from now on, which is all the bound needs; the bucket gets them back with
                # the next statement, or within _RETURN_EVERY_S (a statement of their own would mostly be waste).
                if not lease.giving:
                    self._giving.append(lease)
                spent = lease.mark - lease.tokens
                lease.giving += lease.tokens
                lease.tokens = 0
                # A lease in use is renewed in this tick's statement (its unspent tokens go back in the same row),
                # so a steady instance never runs dry between grants; an unused one is only handed back.
                lease.mark = spent
                if spent > 0 and not lease.queued:
                    lease.queued = True
                    self._queued.append(lease)
            elif (not lease.tokens and not lease.queued and not lease.debt and not lease.sent_debt
                  and not lease.giving and not lease.waiters and lease.empty_until < now
                  and lease.touched < now - _FORGET_AFTER_S):
                forget.append(key)
        for key in forget:
            del self._leases[key]

    def _want(self, lease: _Lease, giving: bool, debt: int) -> int:
        """Tokens to ask for: none when handing back an idle lease, else what was spent since the last grant."""
        if giving and not debt and not lease.waiters and lease.mark <= lease.tokens:
            return 0  # an idle lease handed back
        # Twice what went since the last grant: a busy lease grows to its demand in a few ticks. Larger chunks do
        # not loosen the bound (held tokens go back after lease_s), they only favour this process for that long.
        spent = lease.mark - lease.tokens + lease.sent_debt
        return max(1, len(lease.waiters), min(self._max_chunk, max(self.chunk, 2 * spent)))

    async def _settle(self) -> None:
        leases, self._queued = self._queued, []
        for lease in self._giving:
            if lease.giving and not lease.queued:
                lease.queued = True
                leases.append(lease)
        self._giving = []
        sent: list[tuple[_Lease, int, int]] = []
        entries: list[tuple[str, float, int]] = []
        for lease in leases:
            lease.queued = False
            debt, give = lease.debt, lease.giving
            lease.debt = lease.giving = 0
            lease.sent_debt += debt
            entries.append((lease.key, float(give - debt), self._want(lease, give > 0, debt)))
            sent.append((lease, debt, give))
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await self.buckets.settle(entries)
        except Exception as e:  # an outage, a timeout, a missing table: never refuse everyone for it
            for lease, debt, give in sent:
                lease.sent_debt -= debt
                lease.debt += debt
                lease.giving += give
                if not lease.queued:
                    lease.queued = True
                    self._queued.append(lease)
            self._degrade(e)
            return
        if self.degraded:
            self.degraded = False
            self._shared = True
            log.warning("the shared rate limit is back: limits hold across processes again")
        now = self.clock()
        for lease, debt, give in sent:
            lease.sent_debt -= debt
            got = answer.get(lease.key)
            if got is None:  # its row was being created or deleted by another process: again next tick
                lease.debt += debt
                lease.giving += give
                if not lease.queued:
                    self._queue(lease)
                continue
            self._granted(lease, got, now)

    def _granted(self, lease: _Lease, got: Settled, now: float) -> None:
        lease.touched = now
        tokens = lease.tokens + got.granted
        if got.granted:
            lease.expires = now + self.lease_s
        waiters = lease.waiters
        while waiters and tokens:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(0)
                tokens -= 1
        lease.tokens = lease.mark = tokens
        lease.low = max(1, tokens // 2)
        if got.tokens < 1:
            wait_s = (1 - got.tokens) / self.rate
            lease.empty_until = now + wait_s
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(max(1, math.ceil(wait_s)))
        elif waiters and not lease.queued:
            self._queue(lease)

    def _degrade(self, error: Exception) -> None:
        if not self.degraded:
            log.warning("the shared rate limit is unavailable (%s): each process enforces its own until the "
                        "database answers", type(error).__name__)
        self.degraded = True
        self._shared = False
        for lease in self._leases.values():
            while lease.waiters:
                waiter = lease.waiters.popleft()
                if not waiter.done():
                    waiter.set_result(self.local.acquire(lease.key))

    async def _collect(self) -> None:
        try:
            await self.buckets.collect()
        except Exception as e:
            log.debug("deleting full rate buckets failed: %s", type(e).__name__)

    async def close(self, timeout_s: float = 1.0) -> None:
        """Stop settling; hand back every unspent token and charge outstanding credit, if the database answers."""
        await cancel_and_wait(self._task)
        self._task = None
        for lease in self._leases.values():
            lease.giving += lease.tokens
            lease.tokens = lease.mark = 0
            if (lease.giving or lease.debt) and not lease.queued:
                lease.queued = True
                self._queued.append(lease)
        if self._queued and not self.degraded:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._settle()
            except TimeoutError:
                pass
        for lease in self._leases.values():
            while lease.waiters:
                waiter = lease.waiters.popleft()
                if not waiter.done():
                    waiter.set_result(self.local.acquire(lease.key))
