"""Usage recording: every call becomes a row in ``usage``, written in batches off the request path.

``record`` only appends to a bounded in-memory buffer. A background task flushes the buffer every
``interval_s`` in one multi-row INSERT. While the database is unreachable records stay buffered;
when the buffer is full the oldest are dropped, counted in ``dropped`` and logged, never silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import NamedTuple

from mcp.db import Database
from mcp.errors import Unavailable
from mcp.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Rows per statement: dumping a batch blocks the event loop (about 2.7 us a row), so a second of
# calls is written in a few short steps rather than one long one.
_BATCH = 500
# One statement, so one round trip and atomic without a transaction: the rows go in, and each
# instance's last_used_at moves to its latest call. Binary parameters (%b): arrays of thousands of
# values are dumped several times faster than as text. The service name is the same for every row.
_WRITE = """
WITH u AS (
    SELECT * FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::real[], %b::timestamptz[])
        AS u(instance_id, tool, outcome, latency_ms, called_at)
), inserted AS (
    INSERT INTO usage (instance_id, service_name, tool, outcome, latency_ms, called_at)
    SELECT instance_id, %s, tool, outcome, latency_ms, called_at FROM u
)
UPDATE service_instances SET last_used_at = t.at
FROM (SELECT instance_id, max(called_at) AS at FROM u GROUP BY instance_id) t
WHERE service_instances.id = t.instance_id AND (last_used_at IS NULL OR last_used_at < t.at)
"""


class UsageRecord(NamedTuple):
    """One call; a named tuple, as one is built per call and a frozen dataclass costs several times more."""

    instance_id: uuid.UUID
    service: str
    tool: str
    outcome: str
    latency_ms: float
    called_at: datetime


class UsageRecorder:
    """Buffers usage records and writes them in batches; ``close`` flushes what is left."""

    def __init__(self, db: Database, *, interval_s: float = 1.0, max_buffer: int = 50_000) -> None:
        self.db = db
        self.interval_s = interval_s
        self.max_buffer = max_buffer
        self._buffer: deque[UsageRecord] = deque()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self.written = 0
        self.dropped = 0

    def record(self, instance_id: uuid.UUID, service: str, tool: str, outcome: str, latency_s: float) -> None:
        if len(self._buffer) >= self.max_buffer:
            self._buffer.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("usage buffer full (%d records): %d records dropped so far", self.max_buffer,
                          self.dropped)
        self._buffer.append(UsageRecord(instance_id, service, tool, outcome, latency_s * 1000.0,
                                        datetime.now(UTC)))

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-flush")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self._buffer:
                await self.flush()

    async def flush(self) -> bool:
        """Write everything buffered; False (records kept) if the database is unreachable."""
        async with self._flush_lock:
            while self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(_BATCH, len(self._buffer)))]
                try:
                    await self._write(batch)
                except Unavailable:
                    self._buffer.extendleft(reversed(batch))
                    return False
                except Exception:
                    # Not an outage: retrying the same rows would fail forever, so they are dropped, loudly.
                    self.dropped += len(batch)
                    log.exception("writing %d usage records failed; they were dropped", len(batch))
                    continue
                self.written += len(batch)
        return True

    async def _write(self, batch: list[UsageRecord]) -> None:
        services = {r.service for r in batch}
        async with self.db.connection() as conn:
            if len(services) == 1:  # always, in a service process: one statement, atomic by itself
                await conn.execute(_WRITE, _params(batch, services.pop()))
                return
            async with conn.transaction():
                for service in services:
                    await conn.execute(_WRITE, _params([r for r in batch if r.service == service], service))

    async def close(self, timeout_s: float = 1.5) -> None:
        """Stop the background task and try once more to write what is buffered."""
        await cancel_and_wait(self._task)
        self._task = None
        if self._buffer:
            started = time.monotonic()
            try:
                ok = await asyncio.wait_for(self.flush(), timeout_s)
            except TimeoutError:
                ok = False
            if not ok:
                log.error("%d usage records could not be written before shutdown (%.1fs)",
                          len(self._buffer), time.monotonic() - started)


def _params(rows: list[UsageRecord], service: str) -> tuple[object, ...]:
    return ([r.instance_id for r in rows], [r.tool for r in rows], [r.outcome for r in rows],
            [r.latency_ms for r in rows], [r.called_at for r in rows], service)
