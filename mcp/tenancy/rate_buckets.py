"""The shared token buckets in PostgreSQL (table ``rate_buckets``): one statement settles a whole batch of leases.

Each entry of a batch names an instance, a ``delta`` (tokens given back, minus calls already admitted on credit)
and ``want`` (tokens asked for). The bucket is refilled by the database's clock, the delta applied (it may take
the bucket below zero: debt the refill pays off), and at most ``want`` whole tokens are granted. The answer per
instance is the grant and the tokens left after it, from which the caller tells when the bucket has a token again.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg.rows import tuple_row

from mcp.tenancy.database import Database

# One round trip for any number of instances. Existing rows are locked in id order (so two processes settling
# overlapping batches never deadlock) and their level computed from the latest committed version (a row another
# process changed meanwhile is re-read under the lock). Missing rows are inserted as full buckets; one inserted
# by another process at the same moment is skipped (ON CONFLICT DO NOTHING) and absent from the answer, and the
# caller sends it again. Parameters: ids, deltas and wants each as one comma-separated text (psycopg quotes a
# list's every element through a regular expression; one string is dumped as it is), rate (tokens/s), burst.
_SETTLE = """
WITH req AS (
    SELECT * FROM unnest(string_to_array(%(ids)s, ',')::uuid[], string_to_array(%(deltas)s, ',')::float8[],
                         string_to_array(%(wants)s, ',')::int4[])
        AS r(instance_id, delta, want)
), locked AS (
    SELECT b.instance_id, r.want, greatest(b.updated_at, now()) AS at,
           least(%(burst)s, least(%(burst)s, b.tokens
                 + %(rate)s * greatest(0, extract(epoch FROM now() - b.updated_at))) + r.delta) AS level
    FROM req r JOIN rate_buckets b ON b.instance_id = r.instance_id
    ORDER BY b.instance_id
    FOR UPDATE OF b
), settled AS (
    SELECT instance_id, at, level - least(want, greatest(0, floor(level)))::int AS left_,
           least(want, greatest(0, floor(level)))::int AS granted
    FROM locked
), updated AS (
    UPDATE rate_buckets b
    SET tokens = s.left_, updated_at = s.at,
        full_at = s.at + make_interval(secs => greatest(0, %(burst)s - s.left_) / %(rate)s)
    FROM settled s WHERE b.instance_id = s.instance_id
    RETURNING b.instance_id, s.granted, b.tokens
), fresh AS (
    SELECT r.instance_id, least(r.want, greatest(0, floor(n.level)))::int AS granted, n.level
    FROM req r CROSS JOIN LATERAL (SELECT least(%(burst)s, %(burst)s + r.delta) AS level) n
    WHERE NOT EXISTS (SELECT 1 FROM rate_buckets b WHERE b.instance_id = r.instance_id)
), inserted AS (
    INSERT INTO rate_buckets (instance_id, tokens, updated_at, full_at)
    SELECT instance_id, level - granted, now(),
           now() + make_interval(secs => greatest(0, %(burst)s - (level - granted)) / %(rate)s)
    FROM fresh ORDER BY instance_id
    ON CONFLICT DO NOTHING
    RETURNING instance_id, tokens
)
SELECT instance_id::text, granted, tokens FROM updated
UNION ALL
SELECT i.instance_id::text, f.granted, i.tokens FROM inserted i JOIN fresh f ON f.instance_id = i.instance_id
"""

# A row whose bucket has been full for a while says nothing a missing row does not.
_COLLECT = "DELETE FROM rate_buckets WHERE full_at < now() - make_interval(secs => %s)"


@dataclass(frozen=True, slots=True)
class Settled:
    granted: int
    tokens: float  # left in the bucket after the grant; below 1 means it is empty for now


class RateBuckets:
    """The table's two statements; every failure propagates (the caller decides what an outage means)."""

    def __init__(self, db: Database, rate_per_s: float, burst: float) -> None:
        self.db = db
        self.rate = rate_per_s
        self.burst = max(1.0, burst)

    async def settle(self, entries: list[tuple[str, float, int]]) -> dict[str, Settled]:
        """Apply ``(instance key, delta, want)`` entries in one statement; the answer is keyed like the input.

        A key missing from the answer was not settled (its row was being created or deleted by another
        process at that instant): send its entry again.
        """
        params = {"ids": ",".join([k for k, _, _ in entries]),
                  "deltas": ",".join([repr(float(d)) for _, d, _ in entries]),
                  "wants": ",".join([str(int(w)) for _, _, w in entries]), "rate": self.rate, "burst": self.burst}
        async with self.db.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(_SETTLE, params)
            rows = await cur.fetchall()
        return {key: Settled(granted, tokens) for key, granted, tokens in rows}

    async def collect(self, full_for_s: float = 60.0) -> int:
        """Delete the rows of buckets full for ``full_for_s`` seconds; how many went."""
        async with self.db.connection() as conn:
            return (await conn.execute(_COLLECT, (full_for_s,))).rowcount
