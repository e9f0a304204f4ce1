"""SQL for the main API: catalog, users, instances and usage. Handlers call these; nothing else does."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

_INSTANCE_COLUMNS = """
    i.id, i.service_name AS service, u.email AS user, i.status, i.expires_at,
    i.created_at, i.updated_at, i.last_used_at, i.tool_policy,
    i.account, i.scopes, i.token_expires_at
"""


async def catalog(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT name, display_name, description, icon, port, auth_type, also_accepts, version, active "
        "FROM mcp_table ORDER BY name")
    return await cur.fetchall()


async def catalog_entry(conn: psycopg.AsyncConnection, name: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT name, port, auth_type, also_accepts, active FROM mcp_table WHERE name = %s", (name,))
    return await cur.fetchone()


async def service_tools(conn: psycopg.AsyncConnection, name: str) -> list[dict[str, Any]]:
    """The service's tools as the catalog lists them: ``[{"name", "read_only"}]``."""
    cur = await conn.execute("SELECT tools FROM mcp_table WHERE name = %s", (name,))
    row = await cur.fetchone()
    return list(row["tools"]) if row is not None else []


def _policy(tool_policy: dict[str, Any] | None) -> Jsonb | None:
    return None if tool_policy is None else Jsonb(tool_policy)  # SQL NULL, not the JSON null, for "every tool"


async def upsert_user(conn: psycopg.AsyncConnection, email: str) -> int:
    cur = await conn.execute(
        "INSERT INTO users (email) VALUES (%s) ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email "
        "RETURNING id", (email,))
    row = await cur.fetchone()
    assert row is not None
    return int(row["id"])


async def insert_instance(conn: psycopg.AsyncConnection, instance_id: uuid.UUID, user_id: int, service: str,
                          expires_at: datetime | None, credentials_enc: str,
                          tool_policy: dict[str, Any] | None = None) -> None:
    await conn.execute(
        "INSERT INTO service_instances (id, user_id, service_name, expires_at, credentials_enc, tool_policy) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (instance_id, user_id, service, expires_at, credentials_enc, _policy(tool_policy)))


async def insert_pending_instance(conn: psycopg.AsyncConnection, instance_id: uuid.UUID, user_id: int, service: str,
                                  credentials_enc: str) -> None:
    """An instance waiting for its account to be connected (POST /api/connect); its credentials are empty."""
    await conn.execute(
        "INSERT INTO service_instances (id, user_id, service_name, status, credentials_enc) "
        "VALUES (%s, %s, %s, 'pending', %s)", (instance_id, user_id, service, credentials_enc))


async def refresh_due(conn: psycopg.AsyncConnection, window_s: float, limit: int) -> list[dict[str, Any]]:
    """Active instances whose refresh token expires within ``window_s`` seconds, soonest first."""
    cur = await conn.execute(
        "SELECT id, service_name AS service, credentials_enc FROM service_instances "
        "WHERE status = 'active' AND refresh_expires_at < now() + make_interval(secs => %s) "
        "ORDER BY refresh_expires_at LIMIT %s", (window_s, limit))
    return await cur.fetchall()


async def get_instance(conn: psycopg.AsyncConnection, instance_id: uuid.UUID) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {_INSTANCE_COLUMNS}, m.port FROM service_instances i JOIN users u ON u.id = i.user_id "
        "JOIN mcp_table m ON m.name = i.service_name WHERE i.id = %s", (instance_id,))
    return await cur.fetchone()


async def update_instance(conn: psycopg.AsyncConnection, instance_id: uuid.UUID, changes: dict[str, Any]) -> bool:
    """Apply column changes (status, expires_at, credentials_enc, tool_policy); False if there is no such instance."""
    allowed = {"status", "expires_at", "credentials_enc", "tool_policy", "token_expires_at", "refresh_expires_at"}
    cols = [c for c in changes if c in allowed]
    assignments = ", ".join(f"{c} = %s" for c in cols)
    cur = await conn.execute(
        f"UPDATE service_instances SET {assignments}, updated_at = now() WHERE id = %s",
        (*[_policy(changes[c]) if c == "tool_policy" else changes[c] for c in cols], instance_id))
    return cur.rowcount == 1


async def rotate_instance_id(conn: psycopg.AsyncConnection, old: uuid.UUID, new: uuid.UUID,
                             reseal: Any) -> bool:
    """Move an instance (and its usage history) to a new id; ``reseal(old_enc)`` re-encrypts for it.

    The update trigger announces the *old* id, so every process drops it at once.
    """
    async with conn.transaction():
        cur = await conn.execute("SELECT credentials_enc FROM service_instances WHERE id = %s FOR UPDATE", (old,))
        row = await cur.fetchone()
        if row is None:
            return False
        await conn.execute("UPDATE service_instances SET id = %s, credentials_enc = %s, updated_at = now() "
                           "WHERE id = %s", (new, reseal(row["credentials_enc"]), old))
        await conn.execute("UPDATE usage SET instance_id = %s WHERE instance_id = %s", (new, old))
    return True


async def delete_instance(conn: psycopg.AsyncConnection, instance_id: uuid.UUID) -> bool:
    cur = await conn.execute("DELETE FROM service_instances WHERE id = %s", (instance_id,))
    return cur.rowcount == 1


async def user_instances(conn: psycopg.AsyncConnection, email: str) -> list[dict[str, Any]] | None:
    """The user's instances, or None if there is no such user."""
    cur = await conn.execute("SELECT id FROM users WHERE email = %s", (email,))
    if await cur.fetchone() is None:
        return None
    cur = await conn.execute(
        f"SELECT {_INSTANCE_COLUMNS}, m.port FROM service_instances i JOIN users u ON u.id = i.user_id "
        "JOIN mcp_table m ON m.name = i.service_name WHERE u.email = %s ORDER BY i.created_at", (email,))
    return await cur.fetchall()


async def usage_summary(conn: psycopg.AsyncConnection, instance_id: uuid.UUID) -> dict[str, Any]:
    cur = await conn.execute(
        "SELECT count(*) AS calls, count(*) FILTER (WHERE outcome <> 'ok') AS errors, "
        "avg(latency_ms) AS avg_ms, percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms, "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_ms, max(latency_ms) AS max_ms, "
        "min(called_at) AS first_call, max(called_at) AS last_call FROM usage WHERE instance_id = %s",
        (instance_id,))
    total = await cur.fetchone()
    cur = await conn.execute(
        "SELECT tool, count(*) AS calls, count(*) FILTER (WHERE outcome <> 'ok') AS errors, "
        "avg(latency_ms) AS avg_ms, max(called_at) AS last_call FROM usage WHERE instance_id = %s "
        "GROUP BY tool ORDER BY tool", (instance_id,))
    by_tool = await cur.fetchall()
    assert total is not None
    return {"total": total, "by_tool": by_tool}
