-- One token bucket per instance, shared by every process of every host (mcp/tenancy/rate_limit.py).
--
-- Processes lease tokens from it in batches and spend them locally, so a call well below its limit never waits
-- for the database. Refill is computed from the database's clock (now()), never a host's, so hosts agree.
-- tokens may be negative: calls admitted on credit before the database answered are charged as debt.
-- A missing row is a full bucket; full_at is when the row's bucket is full again, after which the row says
-- nothing a missing one does not, so it may be deleted (rows whose instance was deleted go the same way).
CREATE TABLE rate_buckets (
    instance_id uuid PRIMARY KEY,
    tokens      double precision NOT NULL,
    updated_at  timestamptz NOT NULL,
    full_at     timestamptz NOT NULL
);
CREATE INDEX rate_buckets_full_at_idx ON rate_buckets (full_at);
