"""Uncached instance lookups through the platform's own resolver: SQL round trip plus decryption.

Each lookup drops the resolver's cache entry first, so every one reads the database. Run at 1,000
instances and again at 100,000; the two must be close (the lookup is a primary-key probe).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mcp.tenancy.credentials import CredentialCipher
from mcp.tenancy.database import Database
from mcp.tenancy.instances import InstanceResolver


@dataclass(frozen=True)
class LookupTiming:
    instances: int
    lookups: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    foreign_cpu: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


async def _measure(url: str, cipher: CredentialCipher, ids: list[uuid.UUID], lookups: int) -> list[float]:
    db = Database(url, Path("/nonexistent"), timeout_s=5.0, max_size=2, application_name="mcp-bench-lookup")
    resolver = InstanceResolver(db, cipher, "figma", ttl_s=0.0)
    rng = random.Random(7)
    sample = [rng.choice(ids) for _ in range(lookups)]
    try:
        for instance_id in sample[: min(200, lookups)]:  # warm the pool, the plan cache, the page cache
            resolver.invalidate(instance_id)
            await resolver.lookup(instance_id)
        times: list[float] = []
        for instance_id in sample:
            resolver.invalidate(instance_id)
            started = time.perf_counter()
            found = await resolver.lookup(instance_id)
            times.append((time.perf_counter() - started) * 1000.0)
            if found is None:
                raise RuntimeError(f"instance {instance_id} was not found")
        return times
    finally:
        await db.close()


def measure_lookups(url: str, cipher: CredentialCipher, ids: list[uuid.UUID], total: int,
                    lookups: int) -> LookupTiming:
    """Time ``lookups`` uncached lookups of random ids among ``ids`` with ``total`` rows in the table."""
    times = sorted(asyncio.run(_measure(url, cipher, ids, lookups)))
    return LookupTiming(instances=total, lookups=len(times), mean_ms=round(sum(times) / len(times), 4),
                        p50_ms=round(percentile(times, 50), 4), p99_ms=round(percentile(times, 99), 4))
