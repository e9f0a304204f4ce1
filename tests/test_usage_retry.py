"""Usage survives a write that fails while the database stays up: the records are written later, once.

The other outage test stops the whole server; here only the connection carrying the write dies, in
the middle of it (the INSERT is held on a table lock, then its backend is terminated), and the calls
come through the MCP endpoint rather than /mcp/call. Only public behaviour is asserted: the rows
that end up in ``usage``.
"""

from __future__ import annotations

import json

import psycopg

from tests.support import http, wait_for

CALLS = 6


def mcp_call(service, iid: str) -> bool:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_me", "arguments": {}}}
    resp = http("POST", f"{service.url}/{iid}/mcp", raw=json.dumps(body).encode(),
                headers={"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                         "MCP-Protocol-Version": "2025-11-25"})
    return resp.status == 200 and resp.json["result"]["isError"] is False


def test_usage_whose_write_dies_mid_statement_is_written_later_once(admin, spawn, figma, database_url):
    service = spawn("services.figma", "FIGMA_PORT", {"INSTANCE_CACHE_TTL": "300", "USAGE_FLUSH_INTERVAL": "0.2"})
    iid = admin.create_instance(credentials={"api_key": "figd_retry"})["instance_id"]

    def rows() -> int:
        with psycopg.connect(database_url) as conn:
            return conn.execute("SELECT count(*) FROM usage WHERE instance_id = %s", (iid,)).fetchone()[0]

    assert mcp_call(service, iid)
    wait_for(lambda: rows() == 1, 20, what="the first usage row")  # the service's pool is connected
    with psycopg.connect(database_url) as locker:
        locker.execute("LOCK TABLE usage IN ACCESS EXCLUSIVE MODE")  # held until the block ends
        for _ in range(CALLS):
            assert mcp_call(service, iid)

        def blocked_writer() -> int | None:
            with psycopg.connect(database_url, autocommit=True) as conn:
                found = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s "
                    "AND wait_event_type = 'Lock' AND query ILIKE '%%usage%%'",
                    (locker.info.backend_pid,)).fetchone()
            return found[0] if found else None

        writer = wait_for(blocked_writer, 20, what="the usage write waiting on the lock")
        with psycopg.connect(database_url, autocommit=True) as conn:
            assert conn.execute("SELECT pg_terminate_backend(%s)", (writer,)).fetchone()[0]
        locker.rollback()
    assert mcp_call(service, iid)  # and the service still serves and records
    wait_for(lambda: rows() >= CALLS + 2, 20, what=f"{CALLS + 2} usage rows")
    assert service.stop() == 0  # a clean stop writes anything still buffered
    assert rows() == CALLS + 2  # each call once: the failed write left nothing behind
