"""Usage recording: every call becomes a row in ``usage``, written in batches off the request path.

``record`` appends the call to this process's spool file (mcp/tenancy/usage_spool.py) before the answer goes out,
so an answered call is counted even if the process is then killed; a background task writes the spool to
PostgreSQL every ``interval_s`` and, at start and every few seconds, adopts the spool files that dead
processes of the same service left behind. Every record carries a unique key and the insert skips keys
already stored, so a record replayed after a crash is counted once.

Without a usable spool (no directory configured, or it cannot be written), records are kept in a bounded
in-memory buffer instead, as they are whenever a spool write fails; those are lost if the process is killed.

While the database is unreachable records stay spooled (or buffered). At most ``max_buffer`` records wait:
beyond it the newest are dropped when spooling, the oldest when in memory; either way counted in ``dropped``
and logged, never silently.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections import deque
from pathlib import Path

from mcp.errors import Unavailable
from mcp.tasks import cancel_and_wait
from mcp.tenancy.database import Database
from mcp.tenancy.usage_spool import Row, Segment, UsageSpool

log = logging.getLogger(__name__)

# Rows per statement: dumping a batch blocks the event loop, so a second of calls is written in a few short
# steps rather than one long one.
_BATCH = 500
# Seconds between looks for spool files of dead processes (a directory listing: cheap).
_ADOPT_EVERY_S = 10.0
# One statement, so one round trip and atomic without a transaction: the rows go in, except those whose key is
# already stored (a replayed spool), and each instance's last_used_at moves to its latest call. Binary
# parameters (%b): arrays of thousands of values are dumped several times faster than as text; the ids travel
# as 32 hex digits, which PostgreSQL reads as uuid. The service name is the same for every row.
_WRITE = """
WITH u AS (
    SELECT record_key::uuid, instance_id::uuid, tool, outcome, latency_us,
           timestamptz 'epoch' + called_us * interval '1 microsecond' AS called_at
    FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::int8[], %b::int8[])
        AS u(record_key, instance_id, tool, outcome, latency_us, called_us)
), inserted AS (
    INSERT INTO usage (record_key, instance_id, service_name, tool, outcome, latency_ms, called_at)
    SELECT record_key, instance_id, %s, tool, outcome, latency_us / 1000.0, called_at FROM u
    ON CONFLICT DO NOTHING
)
UPDATE service_instances SET last_used_at = t.at
FROM (SELECT instance_id, max(called_at) AS at FROM u GROUP BY instance_id) t
WHERE service_instances.id = t.instance_id AND (last_used_at IS NULL OR last_used_at < t.at)
"""


class UsageRecorder:
    """Spools (or buffers) usage records and writes them in batches; ``close`` flushes what is left."""

    def __init__(self, db: Database, *, interval_s: float = 1.0, max_buffer: int = 50_000,
                 spool_dir: Path | None = None, service: str = "") -> None:
        self.db = db
        self.interval_s = interval_s
        self.max_buffer = max_buffer
        self.spool_dir = spool_dir
        self.service = service
        self._spool: UsageSpool | None = None
        self._spooled = 0  # records in this process's own spool files, not yet written
        self._buffer: deque[Row] = deque()
        self._key_prefix = secrets.token_hex(8)
        self._seq = 0
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self.written = 0
        self.dropped = 0

    def record(self, instance_id: uuid.UUID, service: str, tool: str, outcome: str, latency_s: float) -> None:
        """On every call's path: one short line written to the spool file (a few microseconds), no database."""
        self._seq = seq = self._seq + 1
        key = f"{self._key_prefix}{seq:016x}"
        iid = instance_id.hex
        latency_us = round(latency_s * 1e6)
        at_us = time.time_ns() // 1000
        spool = self._spool
        if spool is not None and spool.writable:
            if self._spooled >= self.max_buffer:
                self._drop(1, "usage spool full")
                return
            # The line format is mcp/tenancy/usage_spool.py's _LINE; the row is what parse() reads back from it.
            if spool.append(f"{key}\t{iid}\t{service}\t{tool}\t{outcome}\t{latency_us}\t{at_us}\n".encode(),
                            (key, iid, service, tool, outcome, latency_us, at_us)):
                self._spooled += 1
                return
        if len(self._buffer) >= self.max_buffer:
            self._buffer.popleft()
            self._drop(1, "usage buffer full")
        self._buffer.append((key, iid, service, tool, outcome, latency_us, at_us))

    def _drop(self, n: int, why: str) -> None:
        before, self.dropped = self.dropped, self.dropped + n
        if before == 0 or before // 1000 != self.dropped // 1000:
            log.error("%s: %d usage records dropped so far (at most %d wait to be written)", why, self.dropped,
                      self.max_buffer)

    @property
    def pending(self) -> int:
        return self._spooled + len(self._buffer)

    def start(self) -> None:
        """Open this process's spool file and start the flusher; must run in the serving process's loop."""
        if self._task is None:
            if self._spool is None and self.spool_dir is not None:
                self._spool = UsageSpool.open(self.spool_dir, self.service)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-flush")

    async def _run(self) -> None:
        next_adoption = 0.0
        while True:
            try:
                if self._spool is not None and time.monotonic() >= next_adoption:
                    next_adoption = time.monotonic() + _ADOPT_EVERY_S
                    self._spool.adopt()
                if self._spool is not None or self._buffer:
                    await self.flush()
            except Exception:
                # A spool file that cannot be read or truncated must not end the flusher; the next round retries.
                log.exception("the usage flush failed; retrying in %.1fs", self.interval_s)
            await asyncio.sleep(self.interval_s)

    async def flush(self) -> bool:
        """Write everything spooled and buffered; False (records kept) if the database is unreachable."""
        async with self._flush_lock:
            if self._spool is not None and not await self._drain_spool(self._spool):
                return False
            while self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(_BATCH, len(self._buffer)))]
                if not await self._write_batch(batch):
                    self._buffer.extendleft(reversed(batch))
                    return False
        return True

    async def _drain_spool(self, spool: UsageSpool) -> bool:
        """Write every spool file's records in order, deleting (or truncating) each file once it is drained."""
        while spool.segments():
            segment = spool.segments()[0]
            rows, end, bad = spool.read(segment, _BATCH)
            if end == segment.offset:
                if spool.finish(segment):
                    continue
                return True  # the file being written is drained (and truncated): done
            if rows and not await self._write_batch(rows):
                return False
            if bad:  # counted once they are passed over, not on every retry during an outage
                self._drop(bad, "unreadable usage spool lines")
            self._drained(segment, len(rows) + bad)
            spool.advance(segment, end)
        return True

    def _drained(self, segment: Segment, n: int) -> None:
        if segment.own:
            self._spooled = max(0, self._spooled - n)

    async def _write_batch(self, batch: list[Row]) -> bool:
        """False if the database is unreachable (the caller keeps the rows); other failures drop them, loudly."""
        try:
            await self._write(batch)
        except Unavailable:
            return False
        except Exception:
            # Not an outage: retrying the same rows would fail forever, so they are dropped, loudly.
            self.dropped += len(batch)
            log.exception("writing %d usage records failed; they were dropped", len(batch))
            return True
        self.written += len(batch)
        return True

    async def _write(self, batch: list[Row]) -> None:
        services = {r[2] for r in batch}
        async with self.db.connection() as conn:
            if len(services) == 1:  # always, in a service process: one statement, atomic by itself
                await conn.execute(_WRITE, _params(batch, services.pop()))
                return
            async with conn.transaction():
                for service in services:
                    await conn.execute(_WRITE, _params([r for r in batch if r[2] == service], service))

    async def close(self, timeout_s: float = 1.5) -> None:
        """Stop the background task, try once more to write everything, and release the spool.

        Spool files with records left (the database is down) stay for the next process of the service.
        """
        await cancel_and_wait(self._task)
        self._task = None
        if self.pending or self._spool is not None:
            started = time.monotonic()
            try:
                ok = await asyncio.wait_for(self.flush(), timeout_s)
            except TimeoutError:
                ok = False
            if not ok and self._spooled:
                log.error("%d usage records could not be written before shutdown (%.1fs); %d of them stay in the "
                          "spool for the next %s process", self.pending, time.monotonic() - started, self._spooled,
                          self.service)
            elif not ok:
                log.error("%d usage records could not be written before shutdown (%.1fs)", self.pending,
                          time.monotonic() - started)
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _params(rows: list[Row], service: str) -> tuple[object, ...]:
    return ([r[0] for r in rows], [r[1] for r in rows], [r[3] for r in rows], [r[4] for r in rows],
            [r[5] for r in rows], [r[6] for r in rows], service)
