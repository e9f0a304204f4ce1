"""Usage batches and the pool's connection check, against a real database."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import psycopg

from mcp.tenancy.database import Database
from mcp.tenancy.usage import UsageRecorder


def instance_ids(admin, n: int) -> list[uuid.UUID]:
    return [uuid.UUID(admin.create_instance(user=f"u{i}@example.com")["instance_id"]) for i in range(n)]


def test_a_batch_writes_every_row_and_moves_last_used_at_to_the_latest_call(admin, database_url):
    first, second = instance_ids(admin, 2)

    async def scenario() -> None:
        db = Database(database_url, Path("/nonexistent"), max_size=2)
        usage = UsageRecorder(db, interval_s=3600)
        for n in range(5):
            usage.record(first, "figma", "get_me", "ok", 0.001 * n)
        usage.record(second, "figma", "get_file", "error", 0.25)
        # Another service's rows in the same batch (one recorder per service process, but the
        # recorder does not depend on it).
        usage.record(first, "github", "list_repos", "ok", 0.5)
        assert await usage.flush() and usage.written == 7 and usage.pending == 0
        await db.close()

    asyncio.run(scenario())
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT instance_id, service_name, tool, outcome, latency_ms FROM usage "
                            "ORDER BY id").fetchall()
        touched = dict(conn.execute("SELECT id, last_used_at FROM service_instances WHERE id = ANY(%s)",
                                    ([first, second],)).fetchall())
        latest = dict(conn.execute("SELECT instance_id, max(called_at) FROM usage GROUP BY instance_id").fetchall())
    assert sorted(rows, key=repr) == sorted(
        [(first, "figma", "get_me", "ok", float(f"{n:.1f}")) for n in range(5)]
        + [(second, "figma", "get_file", "error", 250.0), (first, "github", "list_repos", "ok", 500.0)], key=repr)
    assert touched == latest


def test_a_pooled_connection_the_server_closed_is_replaced_not_handed_out(database_url):
    async def scenario(db: Database) -> None:
        async with db.connection() as conn:
            first_pid = (await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone())["pid"]
        with psycopg.connect(database_url, autocommit=True) as admin_conn:
            admin_conn.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
        await asyncio.sleep(0.2)
        # The pool's only connection is dead: the check sees its socket readable (closed by the
        # server), so the pool replaces it and the query succeeds on a new backend.
        async with db.connection() as conn:
            second_pid = (await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone())["pid"]
        assert second_pid != first_pid

    async def bounded() -> None:
        db = Database(database_url, Path("/nonexistent"), max_size=1, timeout_s=2.0)
        try:
            await asyncio.wait_for(scenario(db), 15)
        finally:
            await asyncio.wait_for(db.close(), 5)

    asyncio.run(bounded())
