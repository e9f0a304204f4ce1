"""Abuse bounds per instance and per client: request rate, upstream concurrency, unknown-id probing.

All state is per process and bounded: idle entries are dropped, so a flood of distinct keys cannot
grow memory without limit. With N copies of a service behind nginx each enforces its own share.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
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
    """At most ``limit`` concurrent upstream calls per key; the rest wait their turn.

    One noisy instance queues behind itself and cannot take every upstream connection.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sems: dict[Hashable, tuple[asyncio.Semaphore, int]] = {}

    def slot(self, key: Hashable) -> _Slot:
        return _Slot(self, key)

    def _enter(self, key: Hashable) -> asyncio.Semaphore:
        sem, users = self._sems.get(key, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self.limit)
        self._sems[key] = (sem, users + 1)
        return sem

    def _leave(self, key: Hashable) -> None:
        sem, users = self._sems[key]
        if users <= 1:
            del self._sems[key]  # idle: forget it, so the map holds only keys in use
        else:
            self._sems[key] = (sem, users - 1)


class _Slot:
    def __init__(self, owner: ConcurrencyLimiter, key: Hashable) -> None:
        self._owner = owner
        self._key = key
        self._sem: asyncio.Semaphore | None = None

    async def __aenter__(self) -> None:
        if self._owner.limit <= 0:
            return
        self._sem = self._owner._enter(self._key)
        try:
            await self._sem.acquire()
        except BaseException:
            self._owner._leave(self._key)
            self._sem = None
            raise

    async def __aexit__(self, *exc: object) -> None:
        if self._sem is not None:
            self._sem.release()
            self._owner._leave(self._key)
