"""Abuse bounds kept in one process's memory: token buckets and the upstream concurrency cap.

All state is per process and bounded: idle entries are dropped, so a flood of distinct keys cannot
grow memory without limit. The per-instance request rate is global (mcp/tenancy/rate_limit.py, one
bucket per instance in PostgreSQL); ``RateLimiter`` here is its fallback while the database cannot be
reached, the whole limit with RATE_LIMIT_SCOPE=process, and the unknown-id budget per client address,
which protects this process's own database pool and stays per process on purpose (a client's budget
is then N times as large with N processes: still a bound, and no shared write per guessed id). The
concurrency cap is per process too: it keeps one instance from taking this process's upstream
connections; the upstream account is protected by the global rate limit.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

_MAX_KEYS = 100_000


class RateLimiter:
    """Token buckets: ``rate_per_s`` sustained, ``burst`` at once, per key.

    ``acquire(key)`` returns 0 when the request may go ahead, else the whole seconds to wait.
    """

    def __init__(self, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = max(1.0, burst)
        self.clock = clock
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    @property
    def tracking(self) -> bool:
        """Whether any key has spent a token recently (if not, nobody can be blocked)."""
        return bool(self._buckets)

    def blocked(self, key: Hashable) -> int:
        """Seconds until ``key`` may spend a token again, without spending one (0 if it may now)."""
        if not self.enabled or key not in self._buckets:
            return 0
        tokens, last = self._buckets[key]
        tokens = min(self.burst, tokens + (self.clock() - last) * self.rate)
        return 0 if tokens >= 1.0 else max(1, math.ceil((1.0 - tokens) / self.rate))

    def acquire(self, key: Hashable, cost: float = 1.0) -> int:
        if not self.enabled:
            return 0
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = max(1, math.ceil((cost - tokens) / self.rate))
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > _MAX_KEYS:
            self._buckets.popitem(last=False)
        return wait


class ConcurrencyLimiter:
    """At most ``limit`` concurrent upstream calls per key; the rest wait their turn, first come first served.

    One noisy instance queues behind itself and cannot take every upstream connection. Below the
    limit a call costs one dictionary update; only a call that must wait allocates anything.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._active: dict[Hashable, int] = {}
        self._waiters: dict[Hashable, deque[asyncio.Future[None]]] = {}

    def active(self, key: Hashable) -> int:
        return self._active.get(key, 0)

    async def acquire(self, key: Hashable, deadline: float | None = None) -> None:
        """Take a slot, waiting for one until ``deadline`` (event-loop time; TimeoutError after it)."""
        if self.limit <= 0:
            return
        active = self._active.get(key, 0)
        if active < self.limit and key not in self._waiters:
            self._active[key] = active + 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, deque()).append(waiter)
        try:
            # release() hands its slot over: the active count stays as it is
            if deadline is None:
                await waiter
            else:
                async with asyncio.timeout_at(deadline):
                    await waiter
        except (asyncio.CancelledError, TimeoutError):
            if waiter.done() and not waiter.cancelled():
                self.release(key)  # handed a slot just as it was cancelled: pass it on
            else:
                self._forget(key, waiter)
            raise

    def release(self, key: Hashable) -> None:
        if self.limit <= 0:
            return
        waiters = self._waiters.get(key)
        while waiters:
            waiter = waiters.popleft()
            if not waiters:
                del self._waiters[key]
            if not waiter.done():
                waiter.set_result(None)
                return
        active = self._active.get(key, 0) - 1
        if active > 0:
            self._active[key] = active
        else:
            self._active.pop(key, None)  # idle: forget it, so the map holds only keys in use

    def _forget(self, key: Hashable, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None:
            try:
                waiters.remove(waiter)
            except ValueError:
                pass
            if not waiters:
                del self._waiters[key]
